// One Euler step of a multi-channel PDE-system block (PDESystemBlock), forward and backward, as two
// TensorFlow CPU ops. On NHWC images x (N, H, W, C), zero outside the image,
//
//     y[n, i, j, c] = relu(b[c] + sum_q k[q, c] x[n, i + dy_q, j + dx_q, c] + sum_c' G[c, c'] x[n, i, j, c'])
//
// with q = (dy + 1) * 3 + (dx + 1) the correlation taps of the depthwise stencil (identity included) and
// G (C x C, [output, input]) the channel mixing: the step relu(psi + dt (A psi + b)) of
// pde_zoo/layers/pde_system_field.py with dt folded into k, G and b by the caller.
//
// Both ops walk the batch in chunks of whole images small enough to stay in cache (~256 KB): one
// matrix product for the mixing over the chunk (Eigen, the instruction set the library is compiled
// for), then one sweep that adds the stencil and the bias and applies the ReLU in place. The backward
// op, given x, y and dL/dy, forms g = dL/dy [y > 0] once per chunk and from it, in the same chunk:
//     dL/dx = g G + (the stencil's transpose: the point-reflected taps) g,
//     dL/dG += g^T x,   dL/dk[q, c] += sum_p g[p, c] x[p + offset_q, c],   dL/db += sum_p g[p].
// Images are split into contiguous ranges (kRangesPerThread per thread); each sums its own weight gradients and
// the ranges are added in order, so the result does not depend on which thread ran what.
//
// Built and loaded by pde_zoo/layers/_native.py (with stencil_op.cc); used by _tf_stencil.py.
#include <algorithm>
#include <vector>

#include "Eigen/Core"
#include "pde_zoo_ops.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace pde_zoo {
namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMatrixMap = Eigen::Map<const RowMatrix>;
using MatrixMap = Eigen::Map<RowMatrix>;

constexpr int64 kChunkFloats = 64 * 1024;  // ~256 KB of one state per chunk
constexpr int kFivePoint[] = {1, 3, 4, 5, 7};
constexpr int kNinePoint[] = {0, 1, 2, 3, 4, 5, 6, 7, 8};

template <int kTaps>
constexpr const int* TapList() { return kTaps == 5 ? kFivePoint : kNinePoint; }

// The call's tensors and sizes.
struct Step {
  const float* x;       // (N, H, W, C)
  const float* taps;    // (9, C)
  const float* mixing;  // (C, C), [output, input]
  int64 n;
  int h, w, c;
  int64 pixels() const { return int64(h) * w; }
  int64 image() const { return pixels() * c; }
  int64 chunk_images() const { return std::max<int64>(1, kChunkFloats / std::max<int64>(1, image())); }
};

// Rows i - 1, i, i + 1 of an h x w x c image, a row of zeros (`zero`, w * c floats) outside it.
struct Rows {
  const float* row[3];
  Rows(const float* image, int i, int h, int64 row_size, const float* zero) {
    for (int d = 0; d < 3; ++d) row[d] = (i + d - 1 < 0 || i + d - 1 >= h) ? zero : image + (i + d - 1) * row_size;
  }
};

// nb[t] = the channel vector at column j + offset of tap TapList()[t] in `rows`, or `zero` outside.
template <int kTaps>
inline void Neighbours(const Rows& rows, int j, int w, int c, const float* zero, const float** nb) {
  for (int t = 0; t < kTaps; ++t) {
    const int q = TapList<kTaps>()[t], jj = j + q % 3 - 1;
    nb[t] = (jj < 0 || jj >= w) ? zero : rows.row[q / 3] + int64(jj) * c;
  }
}

// out[p] = act(out[p] + bias + sum_t k[t] * in[p + offset_t]) over one image, in place in `out`;
// `zero` holds a row of zeros (w * c floats).
// act is ReLU (kRelu, with `bias`) or the identity (no bias). k[t]: C taps of TapList()[t]'s offset.
template <int kTaps, bool kRelu>
void StencilSweep(const float* in, float* out, const float* const* k, const float* bias, int h, int w, int c, const float* zero) {
  const float* nb[kTaps];
  for (int i = 0; i < h; ++i) {
    const Rows rows(in, i, h, int64(w) * c, zero);
    for (int j = 0; j < w; ++j) {
      Neighbours<kTaps>(rows, j, w, c, zero, nb);
      float* o = out + (int64(i) * w + j) * c;
#pragma GCC ivdep
      for (int ch = 0; ch < c; ++ch) {
        float acc = kRelu ? o[ch] + bias[ch] : o[ch];
        for (int t = 0; t < kTaps; ++t) acc += k[t][ch] * nb[t][ch];
        o[ch] = kRelu ? std::max(acc, 0.0f) : acc;
      }
    }
  }
}

// acc[t][c] += sum_p g[p, c] * x[p + offset_t, c] over one image (the taps' gradient).
template <int kTaps>
void TapsGradient(const float* g, const float* x, float* acc, int h, int w, int c, const float* zero) {
  const float* nb[kTaps];
  for (int i = 0; i < h; ++i) {
    const Rows rows(x, i, h, int64(w) * c, zero);
    for (int j = 0; j < w; ++j) {
      Neighbours<kTaps>(rows, j, w, c, zero, nb);
      const float* gp = g + (int64(i) * w + j) * c;
      for (int t = 0; t < kTaps; ++t) {
        float* a = acc + int64(t) * c;
#pragma GCC ivdep
        for (int ch = 0; ch < c; ++ch) a[ch] += gp[ch] * nb[t][ch];
      }
    }
  }
}

// Register-tiled kernels for C = NB * kLanes channels, NB = 1 .. kMaxBlocks (one SIMD vector holds kLanes
// channels of a pixel); any other C runs the mixing as an Eigen matrix product and the stencil by
// StencilSweep. A tile keeps P pixels x NB vectors of accumulators in registers (`TilePixels`) while the
// C x C matrix streams through once per tile: the mixing at the FMA rate, not the memory rate.
constexpr int kMaxBlocks = 4;  // beyond, the C x C matrix outgrows L1 and Eigen's blocked product is faster

// Pixels (or rows) per tile: P x NB accumulators and the NB vectors of one matrix row fit in the
// registers with a few to spare, at most 8.
constexpr int TilePixels(int nb) {
  return (kRegisters - 4) / nb - 1 < 1 ? 1 : ((kRegisters - 4) / nb - 1 > 8 ? 8 : (kRegisters - 4) / nb - 1);
}

// Pixels j0 .. j0 + P - 1 of row `rows.row[1]`:
//     out[j] = act(bias + sum_t k[t] * nb_t(j) + sum_ci in[j, ci] * m[ci, :])
// (m row-major C x C, [input, output]; act = ReLU with the bias, else the identity without it).
template <int NB, int P, int kTaps, bool kRelu>
inline void FusedTile(const Rows& rows, int j0, int w, const float* m, const float* const* k, const float* bias,
                      float* out_row, const float* zero) {
  constexpr int c = NB * kLanes;
  const float* centre = rows.row[1] + int64(j0) * c;
  Vec acc[P][NB];
  for (int p = 0; p < P; ++p)
    for (int b = 0; b < NB; ++b) acc[p][b] = kRelu ? Load(bias + b * kLanes) : Vec{};
  for (int ci = 0; ci < c; ++ci) {
    Vec column[NB];
    for (int b = 0; b < NB; ++b) column[b] = Load(m + int64(ci) * c + b * kLanes);
    for (int p = 0; p < P; ++p) {
      const float value = centre[int64(p) * c + ci];
      for (int b = 0; b < NB; ++b) acc[p][b] += column[b] * value;
    }
  }
  // The stencil for every pixel of the tile first, the stores after: a store may alias anything for the
  // compiler (Store is a memcpy), so one between the loads made it reload every tap and row pointer.
  for (int p = 0; p < P; ++p) {
    const float* nb[kTaps];
    Neighbours<kTaps>(rows, j0 + p, w, c, zero, nb);
    for (int b = 0; b < NB; ++b)
      for (int t = 0; t < kTaps; ++t) acc[p][b] += Load(k[t] + b * kLanes) * Load(nb[t] + b * kLanes);
  }
  for (int p = 0; p < P; ++p)
    for (int b = 0; b < NB; ++b) Store(out_row + int64(j0 + p) * c + b * kLanes, kRelu ? Relu(acc[p][b]) : acc[p][b]);
}

// Pixels j .. w - 1 of a row by FusedTile: tiles of P pixels, then the rest in tiles of P / 2, P / 4, ..., 1.
// (A one-pixel tile waits on the multiply-add latency at every input channel; a 28-pixel row is 8 + 8 + 8 + 4,
// not 8 + 8 + 8 and four single pixels.)
template <int NB, int P, int kTaps, bool kRelu>
void FusedSpan(const Rows& rows, int j, int w, const float* m, const float* const* k, const float* bias, float* out_row,
               const float* zero) {
  for (; j + P <= w; j += P) FusedTile<NB, P, kTaps, kRelu>(rows, j, w, m, k, bias, out_row, zero);
  if constexpr (P > 1) FusedSpan<NB, P / 2, kTaps, kRelu>(rows, j, w, m, k, bias, out_row, zero);
}

// Row i of one image by FusedTile (`FusedSpan` from tiles of TilePixels(NB) pixels).
template <int NB, int kTaps, bool kRelu>
void FusedRow(const float* in, int i, int h, int w, const float* m, const float* const* k, const float* bias, float* out,
              const float* zero) {
  constexpr int c = NB * kLanes;
  const Rows rows(in, i, h, int64(w) * c, zero);
  FusedSpan<NB, TilePixels(NB), kTaps, kRelu>(rows, 0, w, m, k, bias, out + int64(i) * w * c, zero);
}

// d_mix[co, ci] += sum_p g[p, co] x[p, ci] for rows co0 .. co0 + R - 1, over `count` pixels.
template <int NB, int R>
inline void OuterTile(const float* g, const float* x, int64 count, int co0, float* d_mix) {
  constexpr int c = NB * kLanes;
  Vec acc[R][NB] = {};
  for (int64 p = 0; p < count; ++p) {
    Vec xs[NB];
    for (int b = 0; b < NB; ++b) xs[b] = Load(x + p * c + b * kLanes);
    for (int r = 0; r < R; ++r) {
      const float value = g[p * c + co0 + r];
      for (int b = 0; b < NB; ++b) acc[r][b] += xs[b] * value;
    }
  }
  for (int r = 0; r < R; ++r)
    for (int b = 0; b < NB; ++b) {
      float* d = d_mix + int64(co0 + r) * c + b * kLanes;
      Store(d, Load(d) + acc[r][b]);
    }
}

template <int NB>
void Outer(const float* g, const float* x, int64 count, float* d_mix) {
  constexpr int c = NB * kLanes, R = TilePixels(NB);
  int co = 0;
  for (; co + R <= c; co += R) OuterTile<NB, R>(g, x, count, co, d_mix);
  for (; co < c; ++co) OuterTile<NB, 1>(g, x, count, co, d_mix);
}

// acc[t, :] += sum_p g[p, :] * x[p + offset_t, :] over one image, tap by tap over the pixels whose
// neighbour is inside (outside ones add zero); four pixels at a time into four partial sums, so the
// additions do not wait on one another.
template <int NB, int kTaps>
void TapsGradientTiled(const float* g, const float* x, float* acc, int h, int w) {
  constexpr int c = NB * kLanes;
  for (int t = 0; t < kTaps; ++t) {
    const int q = TapList<kTaps>()[t], dy = q / 3 - 1, dx = q % 3 - 1;
    const int j0 = std::max(0, -dx), j1 = std::min(w, w - dx);
    Vec sum[4][NB] = {};
    for (int i = std::max(0, -dy); i < std::min(h, h - dy); ++i) {
      const float* gp = g + int64(i) * w * c;
      const float* xp = x + (int64(i + dy) * w + dx) * c;
      int j = j0;
      for (; j + 4 <= j1; j += 4)
        for (int u = 0; u < 4; ++u)
          for (int b = 0; b < NB; ++b) sum[u][b] += Load(gp + int64(j + u) * c + b * kLanes) * Load(xp + int64(j + u) * c + b * kLanes);
      for (; j < j1; ++j)
        for (int b = 0; b < NB; ++b) sum[0][b] += Load(gp + int64(j) * c + b * kLanes) * Load(xp + int64(j) * c + b * kLanes);
    }
    for (int b = 0; b < NB; ++b) {
      float* a = acc + int64(t) * c + b * kLanes;
      Store(a, Load(a) + ((sum[0][b] + sum[1][b]) + (sum[2][b] + sum[3][b])));
    }
  }
}

// The tiled kernels of one channel count (`forward`, `backward`: FusedRow with and without ReLU and
// bias; `outer`; `taps_gradient`), or all null when C is not NB * kLanes with NB <= kMaxBlocks.
template <int kTaps>
struct Tiled {
  using Row = void (*)(const float*, int, int, int, const float*, const float* const*, const float*, float*, const float*);
  Row forward = nullptr, backward = nullptr;
  void (*outer)(const float*, const float*, int64, float*) = nullptr;
  void (*taps_gradient)(const float*, const float*, float*, int, int) = nullptr;

  explicit Tiled(int c) {
    if (c % kLanes == 0) Pick<1>(c / kLanes);
  }
  explicit operator bool() const { return forward != nullptr; }

 private:
  template <int NB>
  void Pick(int nb) {
    if (nb == NB) {
      forward = FusedRow<NB, kTaps, true>, backward = FusedRow<NB, kTaps, false>, outer = Outer<NB>;
      taps_gradient = TapsGradientTiled<NB, kTaps>;
    } else if constexpr (NB < kMaxBlocks) {
      Pick<NB + 1>(nb);
    }
  }
};

// The mixing matrix transposed, row-major [input, output]: the forward pass's m.
std::vector<float> Transposed(const float* mixing, int c) {
  std::vector<float> t(int64(c) * c);
  for (int64 i = 0; i < c; ++i)
    for (int64 j = 0; j < c; ++j) t[j * c + i] = mixing[i * c + j];
  return t;
}

template <int kTaps>
void Forward(OpKernelContext* ctx, int threads, const Step& s, const float* bias, float* y) {
  const int64 per_chunk = s.chunk_images(), chunks = (s.n + per_chunk - 1) / per_chunk;
  const std::vector<float> zero(int64(s.w) * s.c, 0.0f);  // a row of zeros: the border
  const float* k[kTaps];
  for (int t = 0; t < kTaps; ++t) k[t] = s.taps + int64(TapList<kTaps>()[t]) * s.c;
  const ConstMatrixMap mixing(s.mixing, s.c, s.c);
  const Tiled<kTaps> tiled(s.c);
  const std::vector<float> mixing_t = tiled ? Transposed(s.mixing, s.c) : std::vector<float>();
  ParallelTasks(ctx, threads, chunks, [&](int64 chunk) {
    const int64 first = chunk * per_chunk, count = std::min(per_chunk, s.n - first);
    if (tiled) {
      for (int64 m = first; m < first + count; ++m)
        for (int i = 0; i < s.h; ++i)
          tiled.forward(s.x + m * s.image(), i, s.h, s.w, mixing_t.data(), k, bias, y + m * s.image(), zero.data());
      return;
    }
    const ConstMatrixMap x(s.x + first * s.image(), count * s.pixels(), s.c);
    MatrixMap out(y + first * s.image(), count * s.pixels(), s.c);
    out.noalias() = x * mixing.transpose();
    for (int64 m = 0; m < count; ++m) {
      const int64 at = (first + m) * s.image();
      StencilSweep<kTaps, true>(s.x + at, y + at, k, bias, s.h, s.w, s.c, zero.data());
    }
  });
}

// Weight-gradient sums of one image range: taps (9, C), mixing (C, C), bias (C).
struct Sums {
  explicit Sums(int c) : taps(9 * c, 0.0f), mixing(int64(c) * c, 0.0f), bias(c, 0.0f) {}
  std::vector<float> taps, mixing, bias;
};

template <int kTaps>
void Backward(OpKernelContext* ctx, int threads, const Step& s, const float* y, const float* upstream, float* d_x,
              float* d_taps, float* d_mixing, float* d_bias) {
  const int64 per_chunk = s.chunk_images();
  const int64 ranges = std::max<int64>(1, std::min<int64>(kRangesPerThread * threads, s.n));
  std::vector<Sums> sums(ranges, Sums(s.c));
  const std::vector<float> zero(int64(s.w) * s.c, 0.0f);  // a row of zeros: the border
  const float* flipped[kTaps];  // the transpose of a correlation: the tap of the point-reflected offset
  for (int t = 0; t < kTaps; ++t) flipped[t] = s.taps + int64(8 - TapList<kTaps>()[t]) * s.c;
  const ConstMatrixMap mixing(s.mixing, s.c, s.c);
  const Tiled<kTaps> tiled(s.c);
  ParallelTasks(ctx, threads, ranges, [&](int64 r) {
    Sums& sum = sums[r];
    MatrixMap d_mix(sum.mixing.data(), s.c, s.c);
    std::vector<float> g(std::min(per_chunk, s.n) * s.image());
    for (int64 first = s.n * r / ranges, end = s.n * (r + 1) / ranges; first < end; first += per_chunk) {
      const int64 count = std::min(per_chunk, end - first), rows = count * s.pixels(), base = first * s.image();
      for (int64 p = 0; p < rows; ++p) {  // g = dL/dy [y > 0], and the bias gradient
        const float *yp = y + base + p * s.c, *up = upstream + base + p * s.c;
        float* gp = g.data() + p * s.c;
        for (int ch = 0; ch < s.c; ++ch) {
          gp[ch] = yp[ch] > 0.0f ? up[ch] : 0.0f;
          sum.bias[ch] += gp[ch];
        }
      }
      if (tiled) {  // dx = g G + the transposed stencil of g, row by row; dG += g^T x
        tiled.outer(g.data(), s.x + base, rows, sum.mixing.data());
        for (int64 m = 0; m < count; ++m)
          for (int i = 0; i < s.h; ++i)
            tiled.backward(g.data() + m * s.image(), i, s.h, s.w, s.mixing, flipped, nullptr, d_x + base + m * s.image(), zero.data());
      } else {
        const ConstMatrixMap g_chunk(g.data(), rows, s.c), x_chunk(s.x + base, rows, s.c);
        MatrixMap dx_chunk(d_x + base, rows, s.c);
        dx_chunk.noalias() = g_chunk * mixing;
        d_mix.noalias() += g_chunk.transpose() * x_chunk;
        for (int64 m = 0; m < count; ++m)
          StencilSweep<kTaps, false>(g.data() + m * s.image(), d_x + base + m * s.image(), flipped, nullptr, s.h, s.w, s.c, zero.data());
      }
      for (int64 m = 0; m < count; ++m) {
        const float *gm = g.data() + m * s.image(), *xm = s.x + base + m * s.image();
        if (tiled) tiled.taps_gradient(gm, xm, sum.taps.data(), s.h, s.w);
        else TapsGradient<kTaps>(gm, xm, sum.taps.data(), s.h, s.w, s.c, zero.data());
      }
    }
  });
  std::fill(d_taps, d_taps + 9 * s.c, 0.0f);
  std::fill(d_mixing, d_mixing + int64(s.c) * s.c, 0.0f);
  std::fill(d_bias, d_bias + s.c, 0.0f);
  for (const Sums& sum : sums) {  // in range order: deterministic
    for (int t = 0; t < kTaps; ++t) {
      const int64 q = TapList<kTaps>()[t];
      for (int ch = 0; ch < s.c; ++ch) d_taps[q * s.c + ch] += sum.taps[int64(t) * s.c + ch];
    }
    for (int64 e = 0; e < int64(s.c) * s.c; ++e) d_mixing[e] += sum.mixing[e];
    for (int ch = 0; ch < s.c; ++ch) d_bias[ch] += sum.bias[ch];
  }
}

// Checks the inputs both ops share (x, taps, mixing) and fills `s`.
::tensorflow::Status ReadStep(OpKernelContext* ctx, Step* s) {
  const Tensor &x = ctx->input(0), &taps = ctx->input(1), &mixing = ctx->input(2);
  if (x.dims() != 4 || taps.dims() != 2 || taps.dim_size(0) != 9 || mixing.dims() != 2) {
    return tensorflow::errors::InvalidArgument("expected inputs (N, H, W, C), taps (9, C), mixing (C, C)");
  }
  const int64 c = x.dim_size(3);
  if (taps.dim_size(1) != c || mixing.dim_size(0) != c || mixing.dim_size(1) != c) {
    return tensorflow::errors::InvalidArgument("taps, mixing and inputs disagree on the channel count ", c);
  }
  *s = Step{x.flat<float>().data(), taps.flat<float>().data(), mixing.flat<float>().data(), x.dim_size(0),
            static_cast<int>(x.dim_size(1)), static_cast<int>(x.dim_size(2)), static_cast<int>(c)};
  return ::tensorflow::OkStatus();
}

class SystemStepOp : public ThreadsCornersOp {
 public:
  using ThreadsCornersOp::ThreadsCornersOp;

  void Compute(OpKernelContext* ctx) override {
    Step s;
    OP_REQUIRES_OK(ctx, ReadStep(ctx, &s));
    const Tensor& bias = ctx->input(3);
    OP_REQUIRES(ctx, bias.dims() == 1 && bias.dim_size(0) == s.c,
                tensorflow::errors::InvalidArgument("bias must have shape (C,) = (", s.c, ",)"));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &output));
    if (s.n == 0 || s.pixels() == 0 || s.c == 0) return;
    const float* b = bias.flat<float>().data();
    float* y = output->flat<float>().data();
    if (corners_) Forward<9>(ctx, threads_, s, b, y);
    else Forward<5>(ctx, threads_, s, b, y);
  }
};

class SystemStepGradOp : public ThreadsCornersOp {
 public:
  using ThreadsCornersOp::ThreadsCornersOp;

  void Compute(OpKernelContext* ctx) override {
    Step s;
    OP_REQUIRES_OK(ctx, ReadStep(ctx, &s));
    const Tensor &outputs = ctx->input(3), &upstream = ctx->input(4);
    OP_REQUIRES(ctx, outputs.shape() == ctx->input(0).shape() && upstream.shape() == ctx->input(0).shape(),
                tensorflow::errors::InvalidArgument("outputs and upstream must have the shape of inputs"));
    Tensor *d_x = nullptr, *d_taps = nullptr, *d_mixing = nullptr, *d_bias = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &d_x));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(1).shape(), &d_taps));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(2).shape(), &d_mixing));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, ::tensorflow::TensorShape({s.c}), &d_bias));
    float *dx = d_x->flat<float>().data(), *dk = d_taps->flat<float>().data();
    float *dg = d_mixing->flat<float>().data(), *db = d_bias->flat<float>().data();
    if (s.n == 0 || s.pixels() == 0 || s.c == 0) {
      std::fill(dk, dk + 9 * s.c, 0.0f), std::fill(dg, dg + int64(s.c) * s.c, 0.0f), std::fill(db, db + s.c, 0.0f);
      return;
    }
    const float *y = outputs.flat<float>().data(), *up = upstream.flat<float>().data();
    if (corners_) Backward<9>(ctx, threads_, s, y, up, dx, dk, dg, db);
    else Backward<5>(ctx, threads_, s, y, up, dx, dk, dg, db);
  }
};

}  // namespace
}  // namespace pde_zoo

REGISTER_OP("PdeZooSystemStep")
    .Input("inputs: float")   // (N, H, W, C)
    .Input("taps: float")     // (9, C): correlation taps, q = (dy + 1) * 3 + dx + 1, identity included
    .Input("mixing: float")   // (C, C): [output, input]
    .Input("bias: float")     // (C,)
    .Output("outputs: float")  // (N, H, W, C)
    .Attr("threads: int >= 1 = 1")
    .Attr("corners: bool = true")  // false: the corner taps are zero (a five-point stencil), never read
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      return ::tensorflow::OkStatus();
    });

REGISTER_OP("PdeZooSystemStepGrad")
    .Input("inputs: float")    // (N, H, W, C)
    .Input("taps: float")      // (9, C)
    .Input("mixing: float")    // (C, C)
    .Input("outputs: float")   // (N, H, W, C): the forward op's outputs (their sign is the ReLU mask)
    .Input("upstream: float")  // (N, H, W, C): gradient of the loss w.r.t. the outputs
    .Output("d_inputs: float")  // (N, H, W, C)
    .Output("d_taps: float")    // (9, C); corners 0 when corners = false
    .Output("d_mixing: float")  // (C, C)
    .Output("d_bias: float")    // (C,)
    .Attr("threads: int >= 1 = 1")
    .Attr("corners: bool = true")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      c->set_output(2, c->input(2));
      c->set_output(3, c->Vector(c->Dim(c->input(1), 1)));
      return ::tensorflow::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("PdeZooSystemStep").Device(::tensorflow::DEVICE_CPU), pde_zoo::SystemStepOp);
REGISTER_KERNEL_BUILDER(Name("PdeZooSystemStepGrad").Device(::tensorflow::DEVICE_CPU), pde_zoo::SystemStepGradOp);
