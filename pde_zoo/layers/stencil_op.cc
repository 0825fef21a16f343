// A stack of depthwise 3x3 stencil blocks, forward and backward, as two TensorFlow CPU ops.
//
// Layout: images side by side in "lanes", x[i, j, l] of shape (H, W, L), lane l = image * C + channel,
// L a multiple of kLanes. Block t maps s_{t-1} to
//     s_t[i, j, l] = relu(b_t[l] + sum_{dy, dx in -1..1} k_t[(dy + 1) * 3 + dx + 1, l] * s_{t-1}[i + dy, j + dx, l])
// with zeros outside the image (s_{-1} = x). Lanes never interact, so every run of kLanes lanes is
// computed on its own (one SIMD vector per pixel), through all D blocks, by whichever thread takes it.
//
// Built and loaded by pde_zoo/layers/_native.py; used by _tf_stencil.py (see there for why).
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace pde_zoo {
namespace {

using ::tensorflow::int64;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;

#ifdef __AVX512F__
constexpr int kLanes = 16;
#else
constexpr int kLanes = 8;
#endif
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

inline Vec Load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(Vec));
  return v;
}
inline void Store(float* p, Vec v) { std::memcpy(p, &v, sizeof(Vec)); }
inline Vec Zero() { return Vec{} ; }

// out[i, j] = act(bias + sum_q taps[q] * in[(i, j) + offset_q]) over one lane group: pixel (i, j)
// of `in` / `out` is at (i * w + j) * stride; act is ReLU or the identity.
template <bool kRelu>
void Correlate(const float* in, int64 in_stride, float* out, int64 out_stride, const Vec* taps, Vec bias, int h,
               int w) {
  const int64 row = int64(w) * in_stride;
  for (int i = 0; i < h; ++i) {
    for (int j = 0; j < w; ++j) {
      const float* c = in + (int64(i) * w + j) * in_stride;
      Vec acc = bias;
      if (i > 0 && i < h - 1 && j > 0 && j < w - 1) {  // interior: all nine taps, no bounds checks
        acc += taps[0] * Load(c - row - in_stride) + taps[1] * Load(c - row) + taps[2] * Load(c - row + in_stride) +
               taps[3] * Load(c - in_stride) + taps[4] * Load(c) + taps[5] * Load(c + in_stride) +
               taps[6] * Load(c + row - in_stride) + taps[7] * Load(c + row) + taps[8] * Load(c + row + in_stride);
      } else {
        for (int dy = -1; dy <= 1; ++dy) {
          if (i + dy < 0 || i + dy >= h) continue;
          for (int dx = -1; dx <= 1; ++dx) {
            if (j + dx < 0 || j + dx >= w) continue;
            acc += taps[(dy + 1) * 3 + dx + 1] * Load(c + dy * row + dx * in_stride);
          }
        }
      }
      if (kRelu) acc = acc > Zero() ? acc : Zero();
      Store(out + (int64(i) * w + j) * out_stride, acc);
    }
  }
}

// Runs task(0..count-1), each exactly once, on the calling thread and up to `threads - 1` closures
// scheduled on TF's inter-op pool. Tasks are taken from a shared counter, and the caller waits only
// for tasks already taken, so a helper still queued behind other ops never blocks it.
void ParallelTasks(OpKernelContext* ctx, int threads, int64 count, const std::function<void(int64)>& task) {
  struct Shared {
    std::atomic<int64> next{0};
    int64 done = 0;
    std::mutex mu;
    std::condition_variable cv;
  };
  auto shared = std::make_shared<Shared>();
  auto work = [shared, count, &task] {
    for (int64 n; (n = shared->next.fetch_add(1)) < count;) {
      task(n);
      std::lock_guard<std::mutex> lock(shared->mu);
      if (++shared->done == count) shared->cv.notify_all();
    }
  };
  const int helpers = static_cast<int>(std::min<int64>(threads, count)) - 1;
  for (int k = 0; k < helpers; ++k) (*ctx->runner())(work);  // a late helper finds no task and returns
  work();
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->cv.wait(lock, [&] { return shared->done == count; });
}

class StencilStackOp : public OpKernel {
 public:
  explicit StencilStackOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("threads", &threads_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& inputs = ctx->input(0);
    const Tensor& taps = ctx->input(1);
    const Tensor& offsets = ctx->input(2);
    OP_REQUIRES(ctx, inputs.dims() == 3 && taps.dims() == 3 && taps.dim_size(1) == 9 && offsets.dims() == 2,
                tensorflow::errors::InvalidArgument("expected inputs (H, W, L), taps (D, 9, L), offsets (D, L)"));
    const int h = inputs.dim_size(0), w = inputs.dim_size(1), depth = taps.dim_size(0);
    const int64 lanes = inputs.dim_size(2), plane = int64(h) * w * lanes;
    OP_REQUIRES(ctx, lanes % kLanes == 0 && taps.dim_size(2) == lanes && offsets.dim_size(1) == lanes,
                tensorflow::errors::InvalidArgument("lane counts differ or are not a multiple of ", kLanes));
    Tensor* states = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({depth, h, w, lanes}), &states));
    const float* x = inputs.flat<float>().data();
    const float* k = taps.flat<float>().data();
    const float* b = offsets.flat<float>().data();
    float* s = states->flat<float>().data();
    ParallelTasks(ctx, threads_, lanes / kLanes, [&](int64 group) {
      const int64 l = group * kLanes;
      for (int t = 0; t < depth; ++t) {
        Vec tap[9];
        for (int q = 0; q < 9; ++q) tap[q] = Load(k + (int64(t) * 9 + q) * lanes + l);
        const float* prev = t == 0 ? x + l : s + (t - 1) * plane + l;
        Correlate<true>(prev, lanes, s + t * plane + l, lanes, tap, Load(b + int64(t) * lanes + l), h, w);
      }
    });
  }

 private:
  int threads_;
};

class StencilStackGradOp : public OpKernel {
 public:
  explicit StencilStackGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("threads", &threads_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& inputs = ctx->input(0);
    const Tensor& states = ctx->input(1);
    const Tensor& taps = ctx->input(2);
    const Tensor& upstream = ctx->input(3);
    const int h = inputs.dim_size(0), w = inputs.dim_size(1), depth = taps.dim_size(0);
    const int64 lanes = inputs.dim_size(2), pixels = int64(h) * w, plane = pixels * lanes;
    OP_REQUIRES(ctx, states.dims() == 4 && states.dim_size(0) == depth && upstream.shape() == inputs.shape(),
                tensorflow::errors::InvalidArgument("states, taps and upstream do not match the inputs"));
    Tensor *d_inputs = nullptr, *d_taps = nullptr, *d_offsets = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, inputs.shape(), &d_inputs));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, taps.shape(), &d_taps));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({depth, lanes}), &d_offsets));
    const float* x = inputs.flat<float>().data();
    const float* s = states.flat<float>().data();
    const float* k = taps.flat<float>().data();
    const float* up = upstream.flat<float>().data();
    float* dx = d_inputs->flat<float>().data();
    float* dk = d_taps->flat<float>().data();
    float* db = d_offsets->flat<float>().data();
    ParallelTasks(ctx, threads_, lanes / kLanes, [&](int64 group) {
      const int64 l = group * kLanes;
      // g: gradient w.r.t. s_t; g_pre: w.r.t. block t's pre-activation (both one lane group, contiguous).
      std::vector<Vec> g(pixels), g_pre(pixels);
      for (int64 p = 0; p < pixels; ++p) g[p] = Load(up + p * lanes + l);
      const int64 row = int64(w) * lanes;
      for (int t = depth - 1; t >= 0; --t) {
        const float* out = s + t * plane + l;
        const float* prev = t == 0 ? x + l : s + (t - 1) * plane + l;
        Vec acc[9] = {}, acc_b = Zero();
        for (int i = 0; i < h; ++i) {
          for (int j = 0; j < w; ++j) {
            const int64 p = int64(i) * w + j;
            const Vec gp = Load(out + p * lanes) > Zero() ? g[p] : Zero();  // ReLU'(pre) = [s_t > 0]
            g_pre[p] = gp;
            acc_b += gp;
            const float* c = prev + p * lanes;  // d k_t[q] += g_pre * s_{t-1}[(i, j) + offset_q]
            if (i > 0 && i < h - 1 && j > 0 && j < w - 1) {
              acc[0] += gp * Load(c - row - lanes), acc[1] += gp * Load(c - row), acc[2] += gp * Load(c - row + lanes);
              acc[3] += gp * Load(c - lanes), acc[4] += gp * Load(c), acc[5] += gp * Load(c + lanes);
              acc[6] += gp * Load(c + row - lanes), acc[7] += gp * Load(c + row), acc[8] += gp * Load(c + row + lanes);
            } else {
              for (int dy = -1; dy <= 1; ++dy) {
                if (i + dy < 0 || i + dy >= h) continue;
                for (int dxx = -1; dxx <= 1; ++dxx) {
                  if (j + dxx < 0 || j + dxx >= w) continue;
                  acc[(dy + 1) * 3 + dxx + 1] += gp * Load(c + dy * row + dxx * lanes);
                }
              }
            }
          }
        }
        for (int q = 0; q < 9; ++q) Store(dk + (int64(t) * 9 + q) * lanes + l, acc[q]);
        Store(db + int64(t) * lanes + l, acc_b);
        // d s_{t-1} = correlation of g_pre with the point-reflected kernel (transpose of the stencil).
        Vec flipped[9];
        for (int q = 0; q < 9; ++q) flipped[q] = Load(k + (int64(t) * 9 + 8 - q) * lanes + l);
        Correlate<false>(reinterpret_cast<const float*>(g_pre.data()), kLanes, reinterpret_cast<float*>(g.data()),
                         kLanes, flipped, Zero(), h, w);
      }
      for (int64 p = 0; p < pixels; ++p) Store(dx + p * lanes + l, g[p]);
    });
  }

 private:
  int threads_;
};

}  // namespace
}  // namespace pde_zoo

REGISTER_OP("PdeZooStencilStack")
    .Input("inputs: float")   // (H, W, L)
    .Input("taps: float")     // (D, 9, L)
    .Input("offsets: float")  // (D, L)
    .Output("states: float")  // (D, H, W, L): s_0 .. s_{D-1}
    .Attr("threads: int >= 1 = 1")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      ::tensorflow::shape_inference::ShapeHandle out;
      TF_RETURN_IF_ERROR(c->Concatenate(c->Vector(c->Dim(c->input(1), 0)), c->input(0), &out));
      c->set_output(0, out);
      return ::tensorflow::OkStatus();
    });

REGISTER_OP("PdeZooStencilStackGrad")
    .Input("inputs: float")    // (H, W, L)
    .Input("states: float")    // (D, H, W, L), from PdeZooStencilStack
    .Input("taps: float")      // (D, 9, L)
    .Input("upstream: float")  // (H, W, L): gradient of the loss w.r.t. s_{D-1}
    .Output("d_inputs: float")   // (H, W, L)
    .Output("d_taps: float")     // (D, 9, L), per lane
    .Output("d_offsets: float")  // (D, L), per lane
    .Attr("threads: int >= 1 = 1")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(2));
      c->set_output(2, c->Matrix(c->Dim(c->input(2), 0), c->Dim(c->input(2), 2)));
      return ::tensorflow::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("PdeZooStencilStack").Device(::tensorflow::DEVICE_CPU), pde_zoo::StencilStackOp);
REGISTER_KERNEL_BUILDER(Name("PdeZooStencilStackGrad").Device(::tensorflow::DEVICE_CPU), pde_zoo::StencilStackGradOp);
