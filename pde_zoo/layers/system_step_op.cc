// A stack of D multi-channel PDE-system steps (PDESystemBlocks: one block, or a StencilStack stage of
// them), forward and backward, as two TensorFlow CPU ops. On NHWC images x (N, H, W, C), zero outside
// the image, block d = 0..D-1 maps s_{d-1} to (s_{-1} = x)
//
//     s_d[n, i, j, c] = relu(b_d[c] + sum_q k_d[q, c] s_{d-1}[n, i + dy_q, j + dx_q, c] + sum_c' G_d[c, c'] s_{d-1}[n, i, j, c'])
//
// with q = (dy + 1) * 3 + (dx + 1) the correlation taps of the depthwise stencil (identity included) and
// G_d (C x C, [output, input]) the channel mixing: the step relu(psi + dt (A psi + b)) of
// pde_zoo/layers/pde_system_field.py with dt folded into k, G and b by the caller.
//
// Both ops walk the batch in chunks of whole images small enough to stay in cache (~128 KB), each
// chunk through all D blocks. Forward, per block: the mixing (a register-tiled kernel, or one Eigen
// matrix product over the chunk), the stencil, the bias and the ReLU, every state s_d written once
// (the op's outputs: the backward op reads them). Backward, per chunk from block D-1 down to 0, given
// dL/ds_d: g = dL/ds_d [s_d > 0], then
//     dL/ds_{d-1} = g G_d + (the stencil's transpose: the point-reflected taps) g,
//     dL/dG_d += g^T s_{d-1},   dL/dk_d[q, c] += sum_p g[p, c] s_{d-1}[p + offset_q, c],   dL/db_d += sum_p g[p],
// dL/ds_{d-1} kept in a chunk-sized buffer as the next block's upstream gradient: a block reads one
// new state from memory, not x, y and dL/dy, and writes nothing but its gradient sums.
// Images are split into contiguous ranges (kRangesPerThread per thread); each sums its own weight
// gradients and the ranges are added in order, so the result does not depend on which thread ran what.
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

// ~128 KB of one state per chunk: the backward pass keeps five such buffers (x, y, g and two gradients) in L2.
constexpr int64 kChunkFloats = 32 * 1024;
constexpr int kFivePoint[] = {1, 3, 4, 5, 7};
constexpr int kNinePoint[] = {0, 1, 2, 3, 4, 5, 6, 7, 8};

template <int kTaps>
constexpr const int* TapList() { return kTaps == 5 ? kFivePoint : kNinePoint; }

// The call's tensors and sizes: D blocks on images (N, H, W, C).
struct Stack {
  const float* x;        // (N, H, W, C)
  const float* all_taps;    // (D, 9, C)
  const float* all_mixing;  // (D, C, C), [output, input]
  const float* bias;     // (D, C); forward only
  int d;
  int64 n;
  int h, w, c;
  const float* taps(int block) const { return all_taps + int64(block) * 9 * c; }
  const float* mixing(int block) const { return all_mixing + int64(block) * c * c; }
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
#pragma GCC unroll 16
  for (int p = 0; p < P; ++p) {
    const float* nb[kTaps];
    Neighbours<kTaps>(rows, j0 + p, w, c, zero, nb);
    for (int b = 0; b < NB; ++b)
      for (int t = 0; t < kTaps; ++t) acc[p][b] += Load(k[t] + b * kLanes) * Load(nb[t] + b * kLanes);
  }
#pragma GCC unroll 16
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

// g = dL/dy [y > 0] over `count` pixels, and bias_sum += sum_p g[p] (the bias gradient), the sums in
// registers (summed through memory they were a store-to-load chain per pixel).
template <int NB>
void MaskTiled(const float* y, const float* upstream, float* g, int64 count, float* bias_sum) {
  constexpr int c = NB * kLanes;
  Vec sum[NB] = {};
  for (int64 p = 0; p < count; ++p)
    for (int b = 0; b < NB; ++b) {
      const int64 at = p * c + b * kLanes;
      const Vec masked = Load(y + at) > Vec{} ? Load(upstream + at) : Vec{};
      Store(g + at, masked);
      sum[b] += masked;
    }
  for (int b = 0; b < NB; ++b) Store(bias_sum + b * kLanes, Load(bias_sum + b * kLanes) + sum[b]);
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
// bias; `outer`; `taps_gradient`; `mask`), or all null when C is not NB * kLanes with NB <= kMaxBlocks.
template <int kTaps>
struct Tiled {
  using Row = void (*)(const float*, int, int, int, const float*, const float* const*, const float*, float*, const float*);
  Row forward = nullptr, backward = nullptr;
  void (*outer)(const float*, const float*, int64, float*) = nullptr;
  void (*taps_gradient)(const float*, const float*, float*, int, int) = nullptr;
  void (*mask)(const float*, const float*, float*, int64, float*) = nullptr;

  explicit Tiled(int c) {
    if (c % kLanes == 0) Pick<1>(c / kLanes);
  }
  explicit operator bool() const { return forward != nullptr; }

 private:
  template <int NB>
  void Pick(int nb) {
    if (nb == NB) {
      forward = FusedRow<NB, kTaps, true>, backward = FusedRow<NB, kTaps, false>, outer = Outer<NB>;
      taps_gradient = TapsGradientTiled<NB, kTaps>, mask = MaskTiled<NB>;
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

// Block d's weights as the sweeps read them: taps k (forward), the point-reflected taps (the transpose,
// backward), the mixing G [output, input] and, for the tiled forward, G transposed.
template <int kTaps>
struct Weights {
  const float* k[kTaps];
  const float* flipped[kTaps];
  const float* mixing;
  std::vector<float> mixing_t;
  const float* bias;
  Weights(const Stack& s, int d, bool tiled) : mixing(s.mixing(d)), bias(s.bias == nullptr ? nullptr : s.bias + int64(d) * s.c) {
    for (int t = 0; t < kTaps; ++t) {
      k[t] = s.taps(d) + int64(TapList<kTaps>()[t]) * s.c;
      flipped[t] = s.taps(d) + int64(8 - TapList<kTaps>()[t]) * s.c;
    }
    if (tiled) mixing_t = Transposed(mixing, s.c);
  }
};

template <int kTaps>
std::vector<Weights<kTaps>> AllWeights(const Stack& s, bool tiled) {
  std::vector<Weights<kTaps>> w;
  w.reserve(s.d);
  for (int d = 0; d < s.d; ++d) w.emplace_back(s, d, tiled);
  return w;
}

// out = one block's step of `count` images `in` (the forward sweep).
template <int kTaps>
void ForwardImages(const Stack& s, const Tiled<kTaps>& tiled, const Weights<kTaps>& w, const float* in, float* out,
                   int64 count, const float* zero) {
  if (tiled) {
    for (int64 m = 0; m < count; ++m)
      for (int i = 0; i < s.h; ++i) tiled.forward(in + m * s.image(), i, s.h, s.w, w.mixing_t.data(), w.k, w.bias, out + m * s.image(), zero);
    return;
  }
  const ConstMatrixMap x(in, count * s.pixels(), s.c), mixing(w.mixing, s.c, s.c);
  MatrixMap(out, count * s.pixels(), s.c).noalias() = x * mixing.transpose();
  for (int64 m = 0; m < count; ++m) StencilSweep<kTaps, true>(in + m * s.image(), out + m * s.image(), w.k, w.bias, s.h, s.w, s.c, zero);
}

// Weight-gradient sums of one block over one image range: taps (9, C), mixing (C, C), bias (C).
struct Sums {
  explicit Sums(int c) : taps(9 * c, 0.0f), mixing(int64(c) * c, 0.0f), bias(c, 0.0f) {}
  std::vector<float> taps, mixing, bias;
};

// One block's backward over `count` images with inputs x, outputs y and dL/dy `upstream`: writes dL/dx
// to `d_x` (which must not alias `upstream`), adds the weight gradients to `sum`; `g` is scratch space
// for count images.
template <int kTaps>
void BackwardImages(const Stack& s, const Tiled<kTaps>& tiled, const Weights<kTaps>& w, const float* x, const float* y,
                    const float* upstream, float* d_x, int64 count, float* g, Sums& sum, const float* zero) {
  const int64 rows = count * s.pixels();
  if (tiled) {  // g = dL/dy [y > 0] and the bias gradient; dG += g^T x; dx = g G + the transposed stencil of g, row by row
    tiled.mask(y, upstream, g, rows, sum.bias.data());
    tiled.outer(g, x, rows, sum.mixing.data());
    for (int64 m = 0; m < count; ++m) {
      for (int i = 0; i < s.h; ++i) tiled.backward(g + m * s.image(), i, s.h, s.w, w.mixing, w.flipped, nullptr, d_x + m * s.image(), zero);
      tiled.taps_gradient(g + m * s.image(), x + m * s.image(), sum.taps.data(), s.h, s.w);
    }
    return;
  }
  for (int64 p = 0; p < rows; ++p) {  // g = dL/dy [y > 0], and the bias gradient
    const float *yp = y + p * s.c, *up = upstream + p * s.c;
    float* gp = g + p * s.c;
    for (int ch = 0; ch < s.c; ++ch) {
      gp[ch] = yp[ch] > 0.0f ? up[ch] : 0.0f;
      sum.bias[ch] += gp[ch];
    }
  }
  const ConstMatrixMap g_rows(g, rows, s.c), x_rows(x, rows, s.c), mixing(w.mixing, s.c, s.c);
  MatrixMap(d_x, rows, s.c).noalias() = g_rows * mixing;
  MatrixMap(sum.mixing.data(), s.c, s.c).noalias() += g_rows.transpose() * x_rows;
  for (int64 m = 0; m < count; ++m) {
    StencilSweep<kTaps, false>(g + m * s.image(), d_x + m * s.image(), w.flipped, nullptr, s.h, s.w, s.c, zero);
    TapsGradient<kTaps>(g + m * s.image(), x + m * s.image(), sum.taps.data(), s.h, s.w, s.c, zero);
  }
}

// The forward op: each chunk of images goes through all D blocks while it is in cache, block d's outputs
// written to states[d] (the last block's: `outputs`).
template <int kTaps>
void Forward(OpKernelContext* ctx, int threads, const Stack& s, float* const* states) {
  const int64 per_chunk = s.chunk_images(), chunks = (s.n + per_chunk - 1) / per_chunk;
  const std::vector<float> zero(int64(s.w) * s.c, 0.0f);  // a row of zeros: the border
  const Tiled<kTaps> tiled(s.c);
  const std::vector<Weights<kTaps>> weights = AllWeights<kTaps>(s, bool(tiled));
  ParallelTasks(ctx, threads, chunks, [&](int64 chunk) {
    const int64 first = chunk * per_chunk, count = std::min(per_chunk, s.n - first);
    const float* in = s.x + first * s.image();
    for (int d = 0; d < s.d; ++d) {
      float* out = states[d] + first * s.image();
      ForwardImages<kTaps>(s, tiled, weights[d], in, out, count, zero.data());
      in = out;
    }
  });
}

// The backward op: each chunk of images walks back through all D blocks while it is in cache, dL/dx of
// block d (in a chunk-sized buffer) the upstream gradient of block d - 1. Images are split into contiguous
// ranges (kRangesPerThread per thread), each with its own weight-gradient sums, added in range order.
template <int kTaps>
void Backward(OpKernelContext* ctx, int threads, const Stack& s, const float* const* states, const float* upstream,
              float* d_x, float* d_taps, float* d_mixing, float* d_bias) {
  const int64 per_chunk = s.chunk_images(), image = s.image();
  const int64 ranges = std::max<int64>(1, std::min<int64>(kRangesPerThread * threads, s.n));
  std::vector<std::vector<Sums>> sums(ranges, std::vector<Sums>(s.d, Sums(s.c)));
  const std::vector<float> zero(int64(s.w) * s.c, 0.0f);  // a row of zeros: the border
  const Tiled<kTaps> tiled(s.c);
  const std::vector<Weights<kTaps>> weights = AllWeights<kTaps>(s, bool(tiled));
  ParallelTasks(ctx, threads, ranges, [&](int64 r) {
    const int64 size = std::min(per_chunk, s.n) * image;
    std::vector<float> g(size), gradient[2] = {std::vector<float>(size), std::vector<float>(size)};
    for (int64 first = s.n * r / ranges, end = s.n * (r + 1) / ranges; first < end; first += per_chunk) {
      const int64 count = std::min(per_chunk, end - first), base = first * image;
      const float* up = upstream + base;
      for (int d = s.d - 1; d >= 0; --d) {
        const float* x = d == 0 ? s.x + base : states[d - 1] + base;
        float* dx = d == 0 ? d_x + base : gradient[d % 2].data();
        BackwardImages<kTaps>(s, tiled, weights[d], x, states[d] + base, up, dx, count, g.data(), sums[r][d], zero.data());
        up = dx;
      }
    }
  });
  std::fill(d_taps, d_taps + int64(s.d) * 9 * s.c, 0.0f);
  std::fill(d_mixing, d_mixing + int64(s.d) * s.c * s.c, 0.0f);
  std::fill(d_bias, d_bias + int64(s.d) * s.c, 0.0f);
  for (const std::vector<Sums>& range : sums) {  // in range order: deterministic
    for (int d = 0; d < s.d; ++d) {
      const Sums& sum = range[d];
      for (int t = 0; t < kTaps; ++t) {
        const int64 q = TapList<kTaps>()[t];
        for (int ch = 0; ch < s.c; ++ch) d_taps[(int64(d) * 9 + q) * s.c + ch] += sum.taps[int64(t) * s.c + ch];
      }
      for (int64 e = 0; e < int64(s.c) * s.c; ++e) d_mixing[int64(d) * s.c * s.c + e] += sum.mixing[e];
      for (int ch = 0; ch < s.c; ++ch) d_bias[int64(d) * s.c + ch] += sum.bias[ch];
    }
  }
}

// Checks the inputs both ops share (x (N, H, W, C), taps (D, 9, C), mixing (D, C, C)) and fills `s`.
::tensorflow::Status ReadStack(OpKernelContext* ctx, Stack* s) {
  const Tensor &x = ctx->input(0), &taps = ctx->input(1), &mixing = ctx->input(2);
  if (x.dims() != 4 || taps.dims() != 3 || taps.dim_size(1) != 9 || mixing.dims() != 3) {
    return tensorflow::errors::InvalidArgument("expected inputs (N, H, W, C), taps (D, 9, C), mixing (D, C, C)");
  }
  const int64 c = x.dim_size(3), d = taps.dim_size(0);
  if (taps.dim_size(2) != c || mixing.dim_size(1) != c || mixing.dim_size(2) != c) {
    return tensorflow::errors::InvalidArgument("taps, mixing and inputs disagree on the channel count ", c);
  }
  if (d < 1 || mixing.dim_size(0) != d) {
    return tensorflow::errors::InvalidArgument("taps and mixing must hold the same number D >= 1 of blocks");
  }
  *s = Stack{x.flat<float>().data(), taps.flat<float>().data(), mixing.flat<float>().data(), nullptr, static_cast<int>(d),
             x.dim_size(0), static_cast<int>(x.dim_size(1)), static_cast<int>(x.dim_size(2)), static_cast<int>(c)};
  return ::tensorflow::OkStatus();
}

// The D states' buffers: states[0 .. D - 2] in `states` (D - 1, N, H, W, C), states[D - 1] in `outputs`.
template <typename T>
std::vector<T*> StatePointers(const Stack& s, T* states, T* outputs) {
  std::vector<T*> p(s.d);
  for (int d = 0; d + 1 < s.d; ++d) p[d] = states + int64(d) * s.n * s.image();
  p[s.d - 1] = outputs;
  return p;
}

class SystemStackOp : public ThreadsCornersOp {
 public:
  using ThreadsCornersOp::ThreadsCornersOp;

  void Compute(OpKernelContext* ctx) override {
    Stack s;
    OP_REQUIRES_OK(ctx, ReadStack(ctx, &s));
    const Tensor& bias = ctx->input(3);
    OP_REQUIRES(ctx, bias.dims() == 2 && bias.dim_size(0) == s.d && bias.dim_size(1) == s.c,
                tensorflow::errors::InvalidArgument("bias must have shape (D, C) = (", s.d, ", ", s.c, ")"));
    s.bias = bias.flat<float>().data();
    const Tensor& x = ctx->input(0);
    Tensor *outputs = nullptr, *states = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &outputs));
    ::tensorflow::TensorShape states_shape = x.shape();
    states_shape.InsertDim(0, s.d - 1);
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, states_shape, &states));
    if (s.n == 0 || s.pixels() == 0 || s.c == 0) return;
    const std::vector<float*> out = StatePointers(s, states->flat<float>().data(), outputs->flat<float>().data());
    if (corners_) Forward<9>(ctx, threads_, s, out.data());
    else Forward<5>(ctx, threads_, s, out.data());
  }
};

class SystemStackGradOp : public ThreadsCornersOp {
 public:
  using ThreadsCornersOp::ThreadsCornersOp;

  void Compute(OpKernelContext* ctx) override {
    Stack s;
    OP_REQUIRES_OK(ctx, ReadStack(ctx, &s));
    const Tensor &x = ctx->input(0), &outputs = ctx->input(3), &states = ctx->input(4), &upstream = ctx->input(5);
    ::tensorflow::TensorShape states_shape = x.shape();
    states_shape.InsertDim(0, s.d - 1);
    OP_REQUIRES(ctx, outputs.shape() == x.shape() && upstream.shape() == x.shape() && states.shape() == states_shape,
                tensorflow::errors::InvalidArgument("outputs and upstream must have the shape of inputs, states (D - 1, N, H, W, C)"));
    Tensor *d_x = nullptr, *d_taps = nullptr, *d_mixing = nullptr, *d_bias = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &d_x));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, ctx->input(1).shape(), &d_taps));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, ctx->input(2).shape(), &d_mixing));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, ::tensorflow::TensorShape({s.d, s.c}), &d_bias));
    float *dx = d_x->flat<float>().data(), *dk = d_taps->flat<float>().data();
    float *dg = d_mixing->flat<float>().data(), *db = d_bias->flat<float>().data();
    if (s.n == 0 || s.pixels() == 0 || s.c == 0) {
      std::fill(dk, dk + d_taps->NumElements(), 0.0f), std::fill(dg, dg + d_mixing->NumElements(), 0.0f);
      std::fill(db, db + d_bias->NumElements(), 0.0f);
      return;
    }
    const std::vector<const float*> p = StatePointers(s, states.flat<float>().data(), outputs.flat<float>().data());
    const float* up = upstream.flat<float>().data();
    if (corners_) Backward<9>(ctx, threads_, s, p.data(), up, dx, dk, dg, db);
    else Backward<5>(ctx, threads_, s, p.data(), up, dx, dk, dg, db);
  }
};

}  // namespace
}  // namespace pde_zoo

REGISTER_OP("PdeZooSystemStack")
    .Input("inputs: float")   // (N, H, W, C)
    .Input("taps: float")     // (D, 9, C): block d's correlation taps, q = (dy + 1) * 3 + dx + 1, identity included
    .Input("mixing: float")   // (D, C, C): [block, output, input]
    .Input("bias: float")     // (D, C)
    .Output("outputs: float")  // (N, H, W, C): the last block's outputs
    .Output("states: float")   // (D - 1, N, H, W, C): the other blocks' outputs, in order (kept for the backward op)
    .Attr("threads: int >= 1 = 1")
    .Attr("corners: bool = true")  // false: the corner taps are zero (a five-point stencil), never read
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      ::tensorflow::shape_inference::ShapeHandle states;
      TF_RETURN_IF_ERROR(c->Concatenate(c->Vector(c->UnknownDim()), c->input(0), &states));
      c->set_output(1, states);
      return ::tensorflow::OkStatus();
    });

REGISTER_OP("PdeZooSystemStackGrad")
    .Input("inputs: float")    // (N, H, W, C)
    .Input("taps: float")      // (D, 9, C)
    .Input("mixing: float")    // (D, C, C)
    .Input("outputs: float")   // (N, H, W, C): the forward op's outputs
    .Input("states: float")    // (D - 1, N, H, W, C): the forward op's states (their signs are the ReLU masks)
    .Input("upstream: float")  // (N, H, W, C): gradient of the loss w.r.t. the outputs
    .Output("d_inputs: float")  // (N, H, W, C)
    .Output("d_taps: float")    // (D, 9, C); corners 0 when corners = false
    .Output("d_mixing: float")  // (D, C, C)
    .Output("d_bias: float")    // (D, C)
    .Attr("threads: int >= 1 = 1")
    .Attr("corners: bool = true")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(1));
      c->set_output(2, c->input(2));
      c->set_output(3, c->Matrix(c->Dim(c->input(1), 0), c->Dim(c->input(1), 2)));
      return ::tensorflow::OkStatus();
    });

REGISTER_KERNEL_BUILDER(Name("PdeZooSystemStack").Device(::tensorflow::DEVICE_CPU), pde_zoo::SystemStackOp);
REGISTER_KERNEL_BUILDER(Name("PdeZooSystemStackGrad").Device(::tensorflow::DEVICE_CPU), pde_zoo::SystemStackGradOp);
