// A stack of depthwise 3x3 stencil blocks, forward and backward, as two TensorFlow CPU ops.
//
// Layout: images side by side in "lanes", x[i, j, l] of shape (H, W, L), lane l = image * C + channel,
// L a multiple of kLanes. Block t = 0..D-1 maps s_{t-1} to
//     s_t[i, j, l] = relu(b_t[l] + sum_{dy, dx in -1..1} k_t[(dy + 1) * 3 + dx + 1, l] * s_{t-1}[i + dy, j + dx, l])
// with zeros outside the image (s_{-1} = x). Lanes never interact, so every group of kLanes lanes
// (one SIMD vector per pixel) goes through all D blocks on its own, on whichever thread takes it.
//
// The forward op returns s_{D-1} only. The backward op recomputes s_0..s_{D-1} of a lane group into
// a thread-local buffer (~3 MB at D = 50 on 28x28) and walks back through the blocks: writing all
// states out as a tensor for the backward pass (20 MB per batch of 128) cost ~3x the arithmetic.
//
// Built and loaded by pde_zoo/layers/_native.py; used by _tf_stencil.py.
#include <algorithm>
#include <cstring>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "pde_zoo_ops.h"

namespace pde_zoo {
namespace {

using ::tensorflow::TensorShape;

inline Vec Zero() { return Vec{}; }

// One lane group's image with a one-pixel zero border, in caller-owned storage of Size(h, w)
// vectors: every stencil read of an interior pixel is in bounds, so the loops have no edge cases.
class Grid {
 public:
  static int64 Size(int h, int w) { return int64(h + 2) * (w + 2); }
  Grid(Vec* data, int h, int w) : data_(data), h_(h), w_(w) {}
  int64 stride() const { return w_ + 2; }
  Vec* row(int i) const { return data_ + (i + 1) * stride() + 1; }  // pixel (i, 0); i, j may be -1 or h, w
  void ZeroBorder() const {
    for (int j = -1; j <= w_; ++j) row(-1)[j] = row(h_)[j] = Zero();
    for (int i = 0; i < h_; ++i) row(i)[-1] = row(i)[w_] = Zero();
  }
  void Gather(const float* src, int64 lanes) const {  // interior <- src[(i * w + j) * lanes + 0..kLanes)
    for (int i = 0; i < h_; ++i)
      for (int j = 0; j < w_; ++j) row(i)[j] = Load(src + (int64(i) * w_ + j) * lanes);
  }
  void Scatter(float* dst, int64 lanes) const {
    for (int i = 0; i < h_; ++i)
      for (int j = 0; j < w_; ++j) Store(dst + (int64(i) * w_ + j) * lanes, row(i)[j]);
  }

 private:
  Vec* data_;
  int h_, w_;
};

// A thread's scratch space, kept between calls so its pages are touched once, not per step.
Vec* Scratch(int64 size) {
  thread_local std::vector<Vec> buffer;
  if (static_cast<int64>(buffer.size()) < size) buffer.resize(size);
  return buffer.data();
}

// out = act(bias + sum_{dy, dx} taps[(dy + 1) * 3 + dx + 1] * in[. + dy, . + dx]) on the interior;
// act is ReLU or the identity. Without kCorners the corner taps are taken as zero (a five-point
// stencil, as in every PDE block) and not read.
template <bool kRelu, bool kCorners>
void Correlate(const Grid& in, const Grid& out, const Vec* taps, Vec bias, int h, int w) {
  const int64 s = in.stride();
  for (int i = 0; i < h; ++i) {
    const Vec* c = in.row(i);
    Vec* o = out.row(i);
    for (int j = 0; j < w; ++j) {
      Vec acc = bias + taps[1] * c[j - s] + taps[3] * c[j - 1] + taps[4] * c[j] + taps[5] * c[j + 1] + taps[7] * c[j + s];
      if (kCorners) acc += taps[0] * c[j - s - 1] + taps[2] * c[j - s + 1] + taps[6] * c[j + s - 1] + taps[8] * c[j + s + 1];
      o[j] = kRelu ? (acc > Zero() ? acc : Zero()) : acc;
    }
  }
}

struct Problem {  // one call's tensors (lane-major, see the top) and sizes
  const float* x;
  const float* taps;     // (D, 9, L)
  const float* offsets;  // (D, L)
  int h, w, depth;
  int64 lanes;
  void Taps(int t, int64 l, Vec* out) const {
    for (int q = 0; q < 9; ++q) out[q] = Load(taps + (int64(t) * 9 + q) * lanes + l);
  }
  Vec Offset(int t, int64 l) const { return Load(offsets + int64(t) * lanes + l); }
};

// s_0 .. s_{D-1} of the lane group at lane l: s_t goes to grids[(t + 1) % n], from grids[0] = x,
// so n = D + 1 grids keep every state and n = 2 ping-pong. Returns the grid of s_{D-1}.
template <bool kCorners>
const Grid& Forward(const Problem& p, int64 l, const std::vector<Grid>& grids) {
  const size_t n = grids.size();
  grids[0].Gather(p.x + l, p.lanes);
  Vec tap[9];
  for (int t = 0; t < p.depth; ++t) {
    p.Taps(t, l, tap);
    Correlate<true, kCorners>(grids[t % n], grids[(t + 1) % n], tap, p.Offset(t, l), p.h, p.w);
  }
  return grids[p.depth % n];
}

// `count` grids over consecutive storage, their borders zeroed.
std::vector<Grid> Grids(Vec* storage, int count, int h, int w) {
  std::vector<Grid> grids;
  for (int n = 0; n < count; ++n) {
    grids.emplace_back(storage + n * Grid::Size(h, w), h, w);
    grids.back().ZeroBorder();
  }
  return grids;
}

// Backward pass of one lane group: d x, d taps (corners 0 without kCorners) and d offsets.
template <bool kCorners>
void Backward(const Problem& p, int64 l, const float* upstream, float* d_x, float* d_taps, float* d_offsets) {
  const int h = p.h, w = p.w;
  const std::vector<Grid> grids = Grids(Scratch((p.depth + 3) * Grid::Size(h, w)), p.depth + 3, h, w);
  const std::vector<Grid> states(grids.begin(), grids.begin() + p.depth + 1);  // x, s_0 .. s_{D-1}
  const Grid& g = grids[p.depth + 1];      // d loss / d s_t
  const Grid& g_pre = grids[p.depth + 2];  // d loss / d (pre-activation of block t)
  Forward<kCorners>(p, l, states);
  g.Gather(upstream + l, p.lanes);
  const int64 s = g.stride();
  for (int t = p.depth - 1; t >= 0; --t) {
    Vec acc[9] = {}, acc_b = Zero();
    for (int i = 0; i < h; ++i) {
      const Vec* out = states[t + 1].row(i);
      const Vec* c = states[t].row(i);  // s_{t-1}
      const Vec* gi = g.row(i);
      Vec* gp_row = g_pre.row(i);
      for (int j = 0; j < w; ++j) {
        const Vec gp = out[j] > Zero() ? gi[j] : Zero();  // relu' = [s_t > 0]
        gp_row[j] = gp;
        acc_b += gp;  // d b_t += g_pre;  d k_t[q] += g_pre * s_{t-1}[. + offset_q]
        acc[1] += gp * c[j - s], acc[3] += gp * c[j - 1], acc[4] += gp * c[j];
        acc[5] += gp * c[j + 1], acc[7] += gp * c[j + s];
        if (kCorners) {
          acc[0] += gp * c[j - s - 1], acc[2] += gp * c[j - s + 1];
          acc[6] += gp * c[j + s - 1], acc[8] += gp * c[j + s + 1];
        }
      }
    }
    for (int q = 0; q < 9; ++q) Store(d_taps + (int64(t) * 9 + q) * p.lanes + l, acc[q]);
    Store(d_offsets + int64(t) * p.lanes + l, acc_b);
    // d s_{t-1} = correlation of g_pre with the point-reflected kernel (the stencil's transpose).
    Vec tap[9], flipped[9];
    p.Taps(t, l, tap);
    for (int q = 0; q < 9; ++q) flipped[q] = tap[8 - q];
    Correlate<false, kCorners>(g_pre, g, flipped, Zero(), h, w);
  }
  g.Scatter(d_x + l, p.lanes);
}

// Checks the shapes shared by both ops and fills `p`.
::tensorflow::Status ReadProblem(OpKernelContext* ctx, Problem* p) {
  const Tensor &x = ctx->input(0), &taps = ctx->input(1), &offsets = ctx->input(2);
  if (x.dims() != 3 || taps.dims() != 3 || taps.dim_size(1) != 9 || offsets.dims() != 2) {
    return tensorflow::errors::InvalidArgument("expected inputs (H, W, L), taps (D, 9, L), offsets (D, L)");
  }
  const int64 lanes = x.dim_size(2);
  if (lanes % kLanes != 0 || taps.dim_size(2) != lanes || offsets.dim_size(1) != lanes ||
      offsets.dim_size(0) != taps.dim_size(0)) {
    return tensorflow::errors::InvalidArgument("lane or block counts differ, or lanes are not a multiple of ", kLanes);
  }
  *p = Problem{x.flat<float>().data(), taps.flat<float>().data(), offsets.flat<float>().data(),
               static_cast<int>(x.dim_size(0)), static_cast<int>(x.dim_size(1)), static_cast<int>(taps.dim_size(0)),
               lanes};
  return ::tensorflow::OkStatus();
}

// What both ops share: the attributes (`ThreadsCornersOp`), and `Compute`: read and check the problem,
// then `Run` it.
class StencilOpBase : public ThreadsCornersOp {
 public:
  using ThreadsCornersOp::ThreadsCornersOp;

  void Compute(OpKernelContext* ctx) override {
    Problem p;
    OP_REQUIRES_OK(ctx, ReadProblem(ctx, &p));
    Run(ctx, p);
  }

 protected:
  virtual void Run(OpKernelContext* ctx, const Problem& p) = 0;

  // fn(first lane) for every group of kLanes lanes, the groups shared among up to threads_ threads.
  template <typename Fn>
  void ForEachLaneGroup(OpKernelContext* ctx, const Problem& p, Fn fn) const {
    ParallelTasks(ctx, threads_, p.lanes / kLanes, [&](int64 group) { fn(group * kLanes); });
  }
};

class StencilStackOp : public StencilOpBase {
 public:
  using StencilOpBase::StencilOpBase;

  void Run(OpKernelContext* ctx, const Problem& p) override {
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &output));
    float* y = output->flat<float>().data();
    ForEachLaneGroup(ctx, p, [&](int64 l) {
      std::vector<Vec> storage(2 * Grid::Size(p.h, p.w));
      const std::vector<Grid> grids = Grids(storage.data(), 2, p.h, p.w);  // s_{t-1}, s_t in turn
      (corners_ ? Forward<true>(p, l, grids) : Forward<false>(p, l, grids)).Scatter(y + l, p.lanes);
    });
  }
};

class StencilStackGradOp : public StencilOpBase {
 public:
  using StencilOpBase::StencilOpBase;

  void Run(OpKernelContext* ctx, const Problem& p) override {
    const Tensor& upstream = ctx->input(3);
    OP_REQUIRES(ctx, upstream.shape() == ctx->input(0).shape(),
                tensorflow::errors::InvalidArgument("upstream must have the shape of inputs"));
    Tensor *d_x = nullptr, *d_taps = nullptr, *d_offsets = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &d_x));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(1).shape(), &d_taps));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(2).shape(), &d_offsets));
    const float* up = upstream.flat<float>().data();
    float *dx = d_x->flat<float>().data(), *dk = d_taps->flat<float>().data(), *db = d_offsets->flat<float>().data();
    ForEachLaneGroup(ctx, p, [&](int64 l) {
      if (corners_) Backward<true>(p, l, up, dx, dk, db);
      else Backward<false>(p, l, up, dx, dk, db);
    });
  }
};

}  // namespace
}  // namespace pde_zoo

REGISTER_OP("PdeZooStencilStack")
    .Input("inputs: float")   // (H, W, L)
    .Input("taps: float")     // (D, 9, L)
    .Input("offsets: float")  // (D, L)
    .Output("outputs: float")  // (H, W, L): s_{D-1}
    .Attr("threads: int >= 1 = 1")
    .Attr("corners: bool = true")  // false: the corner taps are zero (a five-point stencil), never read
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      return ::tensorflow::OkStatus();
    });

REGISTER_OP("PdeZooStencilStackGrad")
    .Input("inputs: float")    // (H, W, L)
    .Input("taps: float")      // (D, 9, L)
    .Input("offsets: float")   // (D, L)
    .Input("upstream: float")  // (H, W, L): gradient of the loss w.r.t. s_{D-1}
    .Output("d_inputs: float")   // (H, W, L)
    .Output("d_taps: float")     // (D, 9, L), per lane; corners 0 when corners = false
    .Output("d_offsets: float")  // (D, L), per lane
    .Attr("threads: int >= 1 = 1")
    .Attr("corners: bool = true")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      c->set_output(2, c->input(2));
      return ::tensorflow::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("PdeZooStencilStack").Device(::tensorflow::DEVICE_CPU), pde_zoo::StencilStackOp);
REGISTER_KERNEL_BUILDER(Name("PdeZooStencilStackGrad").Device(::tensorflow::DEVICE_CPU), pde_zoo::StencilStackGradOp);
