// Group normalization over the channels-last axis, forward and backward, as two TensorFlow CPU ops.
// On x (N, P, C) (P = every axis between the batch and the channels, flattened) with G groups of
// K = C / G consecutive channels, M = P * K values per (image, group):
//
//     mean[n, g] = sum x / M,   var[n, g] = sum (x - mean)^2 / M,   rstd = 1 / sqrt(var + epsilon),
//     y[n, p, c] = (x[n, p, c] - mean[n, g(c)]) * rstd[n, g(c)] * gamma[c] + beta[c]
//
// (keras.layers.GroupNormalization with axis=-1). Each image is one task: its statistics in two sweeps
// (mean, then the centred variance, exact to rounding), then one sweep writing y; the image stays in
// cache between the sweeps. The backward op, with xhat = (x - mean) rstd and the per-channel sums
// S1[c] = sum_p dy, S2[c] = sum_p dy xhat of one image (one sweep), writes in a second sweep
//
//     dx = rstd (gamma dy - A / M - xhat B / M),   A = sum_{c in g} gamma S1,   B = sum_{c in g} gamma S2,
//
// and adds S2 to d gamma, S1 to d beta. Images are split into contiguous ranges (kRangesPerThread per thread), the
// ranges' sums added in order (deterministic).
//
// Built and loaded by pde_zoo/layers/_native.py (one library with the stencil ops); used by group_norm.py.
#include <algorithm>
#include <cmath>
#include <vector>

#include "pde_zoo_ops.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace pde_zoo {
namespace {

struct Norm {  // one call's sizes
  int64 n, p, c, groups;
  int64 k() const { return c / groups; }
  int64 image() const { return p * c; }
};

// Per-channel sums over the pixels of one image: out[c] = sum_p f(p, c).
template <typename F>
void ChannelSums(const Norm& s, std::vector<double>* out, F f) {
  std::vector<float> row_sum(s.c, 0.0f);
  std::fill(out->begin(), out->end(), 0.0);
  for (int64 p = 0; p < s.p; ++p) {
    for (int64 ch = 0; ch < s.c; ++ch) row_sum[ch] += f(p, ch);
    if ((p & 63) == 63 || p == s.p - 1) {  // float partial sums over 64 pixels, then double: accurate and vectorized
      for (int64 ch = 0; ch < s.c; ++ch) (*out)[ch] += row_sum[ch], row_sum[ch] = 0.0f;
    }
  }
}

class GroupNormOp : public OpKernel {
 public:
  explicit GroupNormOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("groups", &groups_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("epsilon", &epsilon_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("threads", &threads_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor &x = ctx->input(0), &gamma = ctx->input(1), &beta = ctx->input(2);
    OP_REQUIRES(ctx, x.dims() == 3 && gamma.dims() == 1 && beta.dims() == 1,
                tensorflow::errors::InvalidArgument("expected inputs (N, P, C), gamma (C,), beta (C,)"));
    const Norm s{x.dim_size(0), x.dim_size(1), x.dim_size(2), groups_};
    OP_REQUIRES(ctx, s.c % groups_ == 0 && gamma.dim_size(0) == s.c && beta.dim_size(0) == s.c,
                tensorflow::errors::InvalidArgument("the channel count ", s.c, " must be a multiple of groups = ", groups_,
                                                    " and match gamma and beta"));
    Tensor *y = nullptr, *mean = nullptr, *rstd = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ::tensorflow::TensorShape({s.n, s.groups}), &mean));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ::tensorflow::TensorShape({s.n, s.groups}), &rstd));
    const float *xs = x.flat<float>().data(), *ga = gamma.flat<float>().data(), *be = beta.flat<float>().data();
    float *ys = y->flat<float>().data(), *ms = mean->flat<float>().data(), *rs = rstd->flat<float>().data();
    ParallelTasks(ctx, threads_, s.n, [&](int64 n) {
      const float* xi = xs + n * s.image();
      float* yi = ys + n * s.image();
      const double count = double(s.p) * s.k();
      std::vector<double> sums(s.c);
      std::vector<float> scale(s.c), centre(s.c);
      ChannelSums(s, &sums, [&](int64 p, int64 ch) { return xi[p * s.c + ch]; });
      for (int64 g = 0; g < s.groups; ++g) {
        double total = 0.0;
        for (int64 ch = g * s.k(); ch < (g + 1) * s.k(); ++ch) total += sums[ch];
        ms[n * s.groups + g] = float(total / count);
        for (int64 ch = g * s.k(); ch < (g + 1) * s.k(); ++ch) centre[ch] = ms[n * s.groups + g];
      }
      ChannelSums(s, &sums, [&](int64 p, int64 ch) {
        const float d = xi[p * s.c + ch] - centre[ch];
        return d * d;
      });
      for (int64 g = 0; g < s.groups; ++g) {
        double total = 0.0;
        for (int64 ch = g * s.k(); ch < (g + 1) * s.k(); ++ch) total += sums[ch];
        const float r = 1.0f / std::sqrt(float(total / count) + epsilon_);
        rs[n * s.groups + g] = r;
        for (int64 ch = g * s.k(); ch < (g + 1) * s.k(); ++ch) scale[ch] = r * ga[ch];
      }
      for (int64 p = 0; p < s.p; ++p) {
        const float* xp = xi + p * s.c;
        float* yp = yi + p * s.c;
        for (int64 ch = 0; ch < s.c; ++ch) yp[ch] = (xp[ch] - centre[ch]) * scale[ch] + be[ch];  // centred: no cancellation
      }
    });
  }

 private:
  int groups_, threads_;
  float epsilon_;
};

class GroupNormGradOp : public OpKernel {
 public:
  explicit GroupNormGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("groups", &groups_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("threads", &threads_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor &x = ctx->input(0), &gamma = ctx->input(1), &mean = ctx->input(2), &rstd = ctx->input(3),
                 &upstream = ctx->input(4);
    OP_REQUIRES(ctx, x.dims() == 3 && gamma.dims() == 1 && x.dim_size(2) % groups_ == 0 && gamma.dim_size(0) == x.dim_size(2),
                tensorflow::errors::InvalidArgument("expected inputs (N, P, C) with C a multiple of groups, gamma (C,)"));
    const Norm s{x.dim_size(0), x.dim_size(1), x.dim_size(2), groups_};
    OP_REQUIRES(ctx, upstream.shape() == x.shape() && mean.NumElements() == s.n * s.groups && rstd.NumElements() == s.n * s.groups,
                tensorflow::errors::InvalidArgument("upstream must have the shape of inputs, mean and rstd (N, groups)"));
    Tensor *d_x = nullptr, *d_gamma = nullptr, *d_beta = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &d_x));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, gamma.shape(), &d_gamma));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, gamma.shape(), &d_beta));
    const float *xs = x.flat<float>().data(), *ga = gamma.flat<float>().data(), *up = upstream.flat<float>().data();
    const float *ms = mean.flat<float>().data(), *rs = rstd.flat<float>().data();
    float* dxs = d_x->flat<float>().data();
    const int64 ranges = std::max<int64>(1, std::min<int64>(kRangesPerThread * threads_, s.n));
    std::vector<std::vector<double>> d_gammas(ranges, std::vector<double>(s.c, 0.0)), d_betas = d_gammas;
    ParallelTasks(ctx, threads_, ranges, [&](int64 r) {
      std::vector<double> s1(s.c), s2(s.c);
      std::vector<float> centre(s.c), inv(s.c), a(s.c), b(s.c), shift(s.c);
      for (int64 n = s.n * r / ranges; n < s.n * (r + 1) / ranges; ++n) {
        const float *xi = xs + n * s.image(), *ui = up + n * s.image();
        float* dxi = dxs + n * s.image();
        for (int64 ch = 0; ch < s.c; ++ch) centre[ch] = ms[n * s.groups + ch / s.k()], inv[ch] = rs[n * s.groups + ch / s.k()];
        ChannelSums(s, &s1, [&](int64 p, int64 ch) { return ui[p * s.c + ch]; });
        ChannelSums(s, &s2, [&](int64 p, int64 ch) { return ui[p * s.c + ch] * (xi[p * s.c + ch] - centre[ch]) * inv[ch]; });
        const double count = double(s.p) * s.k();
        for (int64 g = 0; g < s.groups; ++g) {
          double sum_a = 0.0, sum_b = 0.0;
          for (int64 ch = g * s.k(); ch < (g + 1) * s.k(); ++ch) sum_a += ga[ch] * s1[ch], sum_b += ga[ch] * s2[ch];
          for (int64 ch = g * s.k(); ch < (g + 1) * s.k(); ++ch) {
            // dx = a dy + b x + shift: rstd gamma dy - rstd A / M - rstd^2 (x - mean) B / M
            a[ch] = inv[ch] * ga[ch];
            b[ch] = float(-double(inv[ch]) * inv[ch] * sum_b / count);
            shift[ch] = float(-double(inv[ch]) * sum_a / count) - b[ch] * centre[ch];
          }
        }
        for (int64 p = 0; p < s.p; ++p) {
          const float *xp = xi + p * s.c, *upp = ui + p * s.c;
          float* dxp = dxi + p * s.c;
          for (int64 ch = 0; ch < s.c; ++ch) dxp[ch] = a[ch] * upp[ch] + b[ch] * xp[ch] + shift[ch];
        }
        for (int64 ch = 0; ch < s.c; ++ch) d_gammas[r][ch] += s2[ch], d_betas[r][ch] += s1[ch];
      }
    });
    float *dg = d_gamma->flat<float>().data(), *db = d_beta->flat<float>().data();
    for (int64 ch = 0; ch < s.c; ++ch) {
      double sg = 0.0, sb = 0.0;
      for (int64 r = 0; r < ranges; ++r) sg += d_gammas[r][ch], sb += d_betas[r][ch];  // in range order
      dg[ch] = float(sg), db[ch] = float(sb);
    }
  }

 private:
  int groups_, threads_;
};

}  // namespace
}  // namespace pde_zoo

REGISTER_OP("PdeZooGroupNorm")
    .Input("inputs: float")  // (N, P, C)
    .Input("gamma: float")   // (C,)
    .Input("beta: float")    // (C,)
    .Output("outputs: float")  // (N, P, C)
    .Output("mean: float")     // (N, groups)
    .Output("rstd: float")     // (N, groups): 1 / sqrt(variance + epsilon)
    .Attr("groups: int >= 1")
    .Attr("epsilon: float")
    .Attr("threads: int >= 1 = 1")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      int groups;
      TF_RETURN_IF_ERROR(c->GetAttr("groups", &groups));
      c->set_output(0, c->input(0));
      c->set_output(1, c->Matrix(c->Dim(c->input(0), 0), groups));
      c->set_output(2, c->Matrix(c->Dim(c->input(0), 0), groups));
      return ::tensorflow::OkStatus();
    });

REGISTER_OP("PdeZooGroupNormGrad")
    .Input("inputs: float")    // (N, P, C)
    .Input("gamma: float")     // (C,)
    .Input("mean: float")      // (N, groups)
    .Input("rstd: float")      // (N, groups)
    .Input("upstream: float")  // (N, P, C)
    .Output("d_inputs: float")  // (N, P, C)
    .Output("d_gamma: float")   // (C,)
    .Output("d_beta: float")    // (C,)
    .Attr("groups: int >= 1")
    .Attr("threads: int >= 1 = 1")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      c->set_output(2, c->input(1));
      return ::tensorflow::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("PdeZooGroupNorm").Device(::tensorflow::DEVICE_CPU), pde_zoo::GroupNormOp);
REGISTER_KERNEL_BUILDER(Name("PdeZooGroupNormGrad").Device(::tensorflow::DEVICE_CPU), pde_zoo::GroupNormGradOp);
