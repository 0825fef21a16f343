// A stack of depthwise 3x3 stencil blocks, forward and backward, as two TensorFlow CPU ops.
//
// On x of shape (N, H, W, C) (NHWC, as the layers hold it), block t = 0..D-1 maps s_{t-1} to
//     s_t[n, i, j, c] = relu(b_t[c] + sum_{dy, dx in -1..1} k_t[(dy + 1) * 3 + dx + 1, c] * s_{t-1}[n, i + dy, j + dx, c])
// with zeros outside the image (s_{-1} = x). Images and channels never interact, so the kernels put them
// side by side in "lanes", lane l = n C + c, one SIMD vector of kLanes lanes per pixel: every group of
// kLanes lanes (the last one padded with zero lanes) is gathered from the NHWC tensor into its own
// image-sized buffer, goes through all D blocks there, on whichever thread takes it, and is scattered
// back. The ops read and write NHWC themselves: transposing to and from a lane-major tensor in TF ops
// cost more per step than the gathers here.
//
// The forward op returns s_{D-1}, and in training steps (`keep_checkpoints`) every S-th state as well, in
// its lane groups' own layout. The backward op recomputes the other states of a lane group in a thread-local
// buffer, one segment at a time (`Checkpoints`), and walks back through the blocks: writing all states out
// (20 MB per batch of 128 at D = 50) cost ~3x the arithmetic, and all of a lane group's states (~3 MB at
// D = 50 on 28x28 with AVX-512) overflow a core's L2 cache. Given no checkpoints, it first runs the blocks
// forward again to make them.
// Both ops run several blocks per sweep down the rows (`LaneGroup::Wavefront`, `WavefrontBackward`) where a
// state is larger than the L1 cache, so a block reads the rows the block before it has just written from L1.
//
// Built and loaded by pde_zoo/layers/_native.py; used by _tf_stencil.py.
#include <algorithm>
#include <cstring>
#include <vector>

#include <unistd.h>

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
// A ring grid (RingSize) keeps only the last kRingRows rows written, row i in slot (i + 1) mod kRingRows: all
// that the next block of a `Wavefront` reads of it.
class Grid {
 public:
  static constexpr int kRingRows = 3;
  static int64 Size(int h, int w) { return int64(h + 2) * (w + 2); }
  static int64 RingSize(int w) { return int64(kRingRows) * (w + 2); }
  Grid(Vec* data, int h, int w, bool ring = false) : data_(data), h_(h), w_(w), ring_(ring) {}
  int64 stride() const { return w_ + 2; }
  bool ring() const { return ring_; }
  // Pixel (i, 0); i, j may be -1 or h, w.
  Vec* row(int i) const { return data_ + (ring_ ? (i + 1) % kRingRows : i + 1) * stride() + 1; }
  // Borders zeroed; a ring is zeroed whole (its border columns are never written).
  void ZeroBorder() const {
    if (ring_) {
      std::fill_n(data_, RingSize(w_), Zero());
      return;
    }
    for (int j = -1; j <= w_; ++j) row(-1)[j] = row(h_)[j] = Zero();
    for (int i = 0; i < h_; ++i) row(i)[-1] = row(i)[w_] = Zero();
  }
  // Row i's interior <- 0 (a ring's rows -1 and h are the image's zero border, written when a wavefront needs them).
  void ZeroRow(int i) const { std::fill_n(row(i), w_, Zero()); }
  // Interior <- the pixels of `lanes` (their NHWC offsets base[0..count), pixel p at base + p * stride);
  // lanes count..kLanes - 1 are zero. Lane by lane, as scalars written straight into the grid's vectors
  // (a vector type aliases its element type): assembling each vector in a stack array and loading it made
  // every load wait for its 16 scalar stores (no store forwarding from several stores to one load).
  void Gather(const float* src, const int64* base, int count, int64 stride) const {
    for (int i = 0; i < h_; ++i) {
      float* lanes = reinterpret_cast<float*>(row(i));
      const int64 first = int64(i) * w_ * stride;
      for (int k = 0; k < kLanes; ++k) {
        if (k < count) {
          for (int j = 0; j < w_; ++j) lanes[j * kLanes + k] = src[base[k] + first + j * stride];
        } else {
          for (int j = 0; j < w_; ++j) lanes[j * kLanes + k] = 0.0f;
        }
      }
    }
  }
  // The pixels of `lanes` 0..count-1 <- the interior (Gather's inverse).
  void Scatter(float* dst, const int64* base, int count, int64 stride) const {
    for (int i = 0; i < h_; ++i) {
      const float* lanes = reinterpret_cast<const float*>(row(i));
      const int64 first = int64(i) * w_ * stride;
      for (int k = 0; k < count; ++k) {
        for (int j = 0; j < w_; ++j) dst[base[k] + first + j * stride] = lanes[j * kLanes + k];
      }
    }
  }

 private:
  Vec* data_;
  int h_, w_;
  bool ring_;
};

// A thread's scratch space, kept between calls so its pages are touched once, not per step.
Vec* Scratch(int64 size) {
  thread_local std::vector<Vec> buffer;
  if (static_cast<int64>(buffer.size()) < size) buffer.resize(size);
  return buffer.data();
}

// One output row of a 3x3 correlation: o[j] = act(bias + sum_{dy, dx} taps[(dy + 1) * 3 + dx + 1] * row_dy[j + dx])
// for rows up (dy = -1), c (0) and dn (+1); act is ReLU or the identity. Without kCorners the corner taps are
// taken as zero (a five-point stencil, as in every PDE block) and not read. The centre row's neighbours
// slide through registers (one load per pixel, not three).
template <bool kRelu, bool kCorners>
inline void CorrelateRow(const Vec* up, const Vec* c, const Vec* dn, Vec* o, const Vec* tap_memory, Vec bias, int w) {
  Vec taps[9];  // in registers: the compiler cannot tell that the stores to o leave tap_memory alone
  std::copy_n(tap_memory, 9, taps);
  Vec left = c[-1], mid = c[0];
  for (int j = 0; j < w; ++j) {
    const Vec right = c[j + 1];
    Vec acc = bias + taps[1] * up[j] + taps[3] * left + taps[4] * mid + taps[5] * right + taps[7] * dn[j];
    if (kCorners) acc += taps[0] * up[j - 1] + taps[2] * up[j + 1] + taps[6] * dn[j - 1] + taps[8] * dn[j + 1];
    o[j] = kRelu ? Relu(acc) : acc;
    left = mid, mid = right;
  }
}

constexpr int kMaxWave = 16;  // blocks per wavefront at most (`WaveDepth`)
// Rows in flight per block of a backward wavefront: its masked gradient's 3-row ring, three rows of the state
// before it, one of the state after it, one of g read and the one written.
constexpr int kBackwardRows = 8;

struct Problem {  // one call's tensors and sizes
  const float* x;        // (N, H, W, C)
  const float* taps;     // (D, 9, C)
  const float* offsets;  // (D, C)
  int h, w, depth;
  int64 images, channels;
  int64 lanes() const { return images * channels; }
  int64 groups() const { return (lanes() + kLanes - 1) / kLanes; }
};

// One group of kLanes lanes (lane l = n C + c): where its pixels are in NHWC tensors, and every block's taps
// and offset per lane.
struct LaneGroup {
  int count;              // real lanes (the rest of the vector is padding)
  int64 base[kLanes];     // NHWC offset of lane k's pixel 0: n H W C + c
  int64 channel[kLanes];  // c of lane k
  std::vector<Vec> taps;  // (D, 9): taps[t * 9 + q][k] = k_t[q, channel k]; offsets after them, (D,)
  const Problem& p;
  LaneGroup(const Problem& problem, int64 group) : p(problem), taps(int64(problem.depth) * 10, Zero()) {
    const int64 first = group * kLanes;
    count = static_cast<int>(std::min<int64>(kLanes, p.lanes() - first));
    for (int k = 0; k < kLanes; ++k) {
      const int64 lane = std::min(first + k, p.lanes() - 1);  // padding lanes repeat the last lane's taps
      channel[k] = lane % p.channels;
      base[k] = (lane / p.channels) * p.h * p.w * p.channels + channel[k];
    }
    for (int t = 0; t < p.depth; ++t) {
      for (int k = 0; k < kLanes; ++k) {
        for (int q = 0; q < 9; ++q) taps[t * 9 + q][k] = p.taps[(int64(t) * 9 + q) * p.channels + channel[k]];
        taps[int64(p.depth) * 9 + t][k] = p.offsets[int64(t) * p.channels + channel[k]];
      }
    }
  }
  const Vec* Taps(int t) const { return taps.data() + t * 9; }
  Vec Offset(int t) const { return taps[int64(p.depth) * 9 + t]; }
  void Gather(const Grid& grid, const float* src) const { grid.Gather(src, base, count, p.channels); }
  void Scatter(const Grid& grid, float* dst) const { grid.Scatter(dst, base, count, p.channels); }
  // Blocks [first, last) (block t: state t -> state t + 1; state 0 = x, state D = the output) as wavefronts
  // (`Wavefront`) of at most `wave` blocks, each ending at the last kept state it reaches: `kept(t)` is the grid
  // that keeps state t, or nullptr (then it lives in one of `rings`). States `first` and `last` are kept, and
  // one within every `wave` blocks.
  template <bool kCorners, typename Kept>
  void Run(int first, int last, Kept kept, const Grid* rings, int wave) const {
    const Grid* states[kMaxWave + 1];
    for (int a = first; a < last;) {
      int b = std::min(a + wave, last);
      while (!kept(b)) --b;
      states[0] = kept(a);
      for (int t = a + 1; t <= b; ++t) {
        states[t - a] = kept(t);
        if (!states[t - a]) {
          states[t - a] = &rings[t - a - 1];
          rings[t - a - 1].ZeroRow(-1);
        }
      }
      Wavefront<kCorners>(a, states, b - a);
      a = b;
    }
  }

  // Blocks t0 .. t0 + K - 1 from states[0] to states[K] in one sweep down the rows: at step r block k writes its
  // row r - k, just after block k - 1 wrote row r - k + 1, the last of the rows it reads. Each block reads rows
  // written a moment before, from L1, not a whole state from L2 (block by block, every sweep streamed two 28x28
  // grids of 57.6 KB through L2 with AVX-512), and the states between may be 3-row rings: when a ring reaches
  // row h (the zero border below the image) it is zeroed.
  template <bool kCorners>
  void Wavefront(int t0, const Grid* const* states, int blocks) const {
    for (int r = 0; r < p.h + blocks; ++r) {
      for (int k = std::max(0, r - p.h); k < std::min(blocks, r + 1); ++k) {
        const int i = r - k;
        const Grid &in = *states[k], &out = *states[k + 1];
        if (i < p.h) {
          CorrelateRow<true, kCorners>(in.row(i - 1), in.row(i), in.row(i + 1), out.row(i), Taps(t0 + k), Offset(t0 + k), p.w);
        } else if (out.ring()) {
          out.ZeroRow(i);
        }
      }
    }
  }
};

// Blocks per wavefront (`LaneGroup::Run`, `WavefrontBackward`) for images of width w, each block keeping
// `rows` rows of width w + 2 in L1: as many as fill two thirds of the L1 data cache (the rest holds the taps and
// the rows streamed in and out), at most kMaxWave; 1 (block by block) where a whole state fits there anyway.
// Measured on pde2-50's stack (28x28, 1 thread, Intel Xeon with AVX-512 and 48 KiB of L1): forward
// 3-row rings, best at 4-5 blocks (0.92 -> 0.84 ms), backward ~8 rows per block, best at 2 (3.3 -> 3.0 ms),
// both worse with more; with AVX2's 8 lanes (a state of 28.8 KiB) no depth gained.
int WaveDepth(int h, int w, int rows) {
  static const int64 budget = [] {
    const long l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE);
    return (l1 > 0 ? int64(l1) : int64(32) << 10) * 2 / 3;
  }();
  const int64 row_bytes = int64(w + 2) * sizeof(Vec);
  if (Grid::Size(h, w) * int64(sizeof(Vec)) <= budget) return 1;
  return static_cast<int>(std::clamp<int64>(budget / (rows * row_bytes), 1, kMaxWave));
}

// `count` 3-row rings over consecutive storage, zeroed.
std::vector<Grid> Rings(Vec* storage, int count, int h, int w) {
  std::vector<Grid> rings;
  for (int n = 0; n < count; ++n) {
    rings.emplace_back(storage + n * Grid::RingSize(w), h, w, true);
    rings.back().ZeroBorder();
  }
  return rings;
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

// The states a lane group's backward pass keeps: every `segment`-th state (checkpoints 0, S, 2S, ..., and D)
// and the states inside one segment. S is the largest segment whose grids (C + 1 checkpoints, S - 1 inner
// states, the gradient and a spare) fit in `budget` bytes, so the backward sweep reads its states from the core's
// own cache, not from L3 or memory, at the price of computing the blocks of all but the last segment twice;
// S = D keeps every state. Where no segment fits, the fewest grids.
struct Checkpoints {
  int depth, segment, count;  // D, S and C = ceil(D / S): segment c holds blocks [First(c), Last(c))
  Checkpoints(int depth_, int64 grid_bytes, int64 budget) : depth(depth_), segment(std::max(depth_, 1)) {
    int fewest = depth + 3;
    for (int c = 1; c <= depth; ++c) {
      const int s = (depth + c - 1) / c, grids = c + s + 2;
      if (grids * grid_bytes <= budget) {
        segment = s;
        break;
      }
      if (grids < fewest) fewest = grids, segment = s;
    }
    count = (depth + segment - 1) / segment;
  }
  int grids() const { return count + segment + 2; }  // C + 1 checkpoints, S - 1 inner states, gradient, spare
  int First(int c) const { return c * segment; }
  int Last(int c) const { return std::min(First(c) + segment, depth); }
};

// Bytes of per-core cache a backward pass may fill: half the L2 cache (the rest holds the taps, the upstream
// rows and the other lane groups' outputs), 512 KiB where the size cannot be read.
int64 CacheBudget() {
  static const int64 budget = [] {
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return l2 > 0 ? int64(l2) / 2 : int64(512) << 10;
  }();
  return budget;
}

// The checkpoints of a problem's backward pass (the same in both ops).
Checkpoints CheckpointPlan(const Problem& p) { return Checkpoints(p.depth, Grid::Size(p.h, p.w) * int64(sizeof(Vec)), CacheBudget()); }

// One row of a block's masked gradient: g_pre = g [state t + 1 > 0] (ReLU') on row i, written to `gp_row`, and
// its sums into the weight gradients, sums[q] += g_pre * state t [. + offset_q] (q = 0..8, the 3x3 taps) and
// sums[9] += g_pre (the bias). The sums are kept in registers for the row (the stores to `gp_row` may alias
// anything for the compiler, so sums held in memory would be reloaded after each one).
template <bool kCorners>
inline void MaskedGradientRow(const Vec* o, const Vec* gi, const Vec* up, const Vec* c, const Vec* dn, Vec* gp_row, Vec* sums, int w) {
  Vec s[10];
  std::copy_n(sums, 10, s);
  Vec left = c[-1], mid = c[0];
  for (int j = 0; j < w; ++j) {
    const Vec right = c[j + 1];
    const Vec gp = o[j] > Zero() ? gi[j] : Zero();
    gp_row[j] = gp;
    s[9] += gp;
    s[1] += gp * up[j], s[3] += gp * left, s[4] += gp * mid, s[5] += gp * right, s[7] += gp * dn[j];
    if (kCorners) s[0] += gp * up[j - 1], s[2] += gp * up[j + 1], s[6] += gp * dn[j - 1], s[8] += gp * dn[j + 1];
    left = mid, mid = right;
  }
  std::copy_n(s, 10, sums);
}

// Blocks t_hi, t_hi - 1, ..., t_hi - K + 1 backward, in one sweep down the rows. Block t's step, with
// g = d loss / d (state t + 1) on entry:
//     g_pre = g [state t + 1 > 0]  (ReLU'),   d taps[q] += sum g_pre * state t [. + offset_q],   d bias += sum g_pre,
// and g <- d loss / d (state t) = correlation of g_pre with the point-reflected taps (the stencil's transpose).
// Row i of the new g needs rows i - 1..i + 1 of g_pre, so g_pre runs one row ahead (in its own 3-row ring,
// rings[k]) and g is overwritten in place one row behind. Block k of the sweep runs one row behind block k - 1:
// the row of g it masks next is the one block k - 1 has just written, and the rows of g it overwrites are ones
// block k - 1 has read for the last time; the states' rows, read by two neighbouring blocks, are read the
// second time from L1. `state(t)` is the grid of state t; block t's weight gradients go to
// sums[t * 10 + q] (q = 0..8 the taps, 9 the bias).
template <bool kCorners, typename State>
void WavefrontBackward(const LaneGroup& lanes, int t_hi, int blocks, State state, const Grid& g, const Grid* rings, Vec* sums) {
  const int h = lanes.p.h, w = lanes.p.w;
  Vec flipped[kMaxWave][9];
  for (int k = 0; k < blocks; ++k) {
    for (int q = 0; q < 9; ++q) flipped[k][q] = lanes.Taps(t_hi - k)[8 - q];
    std::fill_n(sums + (t_hi - k) * 10, 10, Zero());
    rings[k].ZeroRow(-1);
  }
  for (int r = -1; r < h + blocks - 1; ++r) {
    for (int k = std::max(0, r - h + 1); k < std::min(blocks, r + 2); ++k) {
      const int i = r - k, t = t_hi - k;  // block t: masks row i + 1, writes row i of the new g
      const Grid &in = state(t), &out = state(t + 1), &g_pre = rings[k];
      if (i + 1 < h) {
        MaskedGradientRow<kCorners>(out.row(i + 1), g.row(i + 1), in.row(i), in.row(i + 1), in.row(i + 2), g_pre.row(i + 1), sums + t * 10, w);
      } else {
        g_pre.ZeroRow(h);  // the zero border below the image
      }
      if (i >= 0) CorrelateRow<false, kCorners>(g_pre.row(i - 1), g_pre.row(i), g_pre.row(i + 1), g.row(i), flipped[k], Zero(), w);
    }
  }
}

// Backward pass of one lane group: d x (scattered), and per lane d taps (corners 0 without kCorners) and
// d offsets, into partial[(t * 10 + q)] (q = 9: the offset). The states between the `Checkpoints` are
// recomputed segment by segment, last segment first; the checkpoints (states S, 2S, ..., D) are `saved` by the
// forward op, or where it saved none (nullptr), made by running the blocks forward first.
template <bool kCorners>
void Backward(const LaneGroup& lanes, const float* upstream, float* d_x, Vec* partial, Vec* saved) {
  const Problem& p = lanes.p;
  const int h = p.h, w = p.w;
  const Checkpoints plan = CheckpointPlan(p);
  const int wave = WaveDepth(h, w, Grid::kRingRows), backward_wave = WaveDepth(h, w, kBackwardRows);
  Vec* scratch = Scratch(plan.grids() * Grid::Size(h, w) + std::max(wave, backward_wave) * Grid::RingSize(w));
  const std::vector<Grid> grids = Grids(scratch, plan.grids(), h, w);
  const std::vector<Grid> rings = Rings(scratch + plan.grids() * Grid::Size(h, w), std::max(wave, backward_wave), h, w);
  const Grid& g = grids[plan.count + plan.segment];  // d loss / d state
  const Grid& spare = grids[plan.count + plan.segment + 1];
  std::vector<Grid> checkpoints(grids.begin(), grids.begin() + plan.count + 1);  // states 0, S, 2S, ..., D
  if (saved) {
    for (int c = 1; c <= plan.count; ++c) checkpoints[c] = Grid(saved + (c - 1) * Grid::Size(h, w), h, w);
  }
  auto state = [&](int c, int k) -> const Grid& {  // state k of segment c: a checkpoint, or an inner state
    return k == plan.First(c) ? checkpoints[c] : k == plan.Last(c) ? checkpoints[c + 1] : grids[plan.count + k - plan.First(c)];
  };
  // The forward sweep keeps the checkpoints and the last segment's inner states; in the other segments every
  // wave-th state goes to g or the spare grid in turn (g is free until the backward sweep), the rest to rings.
  lanes.Gather(grids[0], p.x);
  const int last = plan.count - 1;
  if (!saved) {  // checkpoints, and the last segment's inner states, from the blocks run forward
    lanes.Run<kCorners>(0, p.depth, [&](int t) -> const Grid* {
      const int c = std::min(t / plan.segment, last), k = t - plan.First(c);
      if (k == 0 || c == last) return &state(c, t);
      return k % wave ? nullptr : (k / wave) % 2 ? &g : &spare;
    }, rings.data(), wave);
  }
  lanes.Gather(g, upstream);
  for (int c = last; c >= 0; --c) {
    if (c < last || saved) {  // without saved checkpoints, the last segment's inner states are left from the forward sweep
      lanes.Run<kCorners>(plan.First(c), plan.Last(c) - 1, [&](int t) { return &state(c, t); }, rings.data(), wave);
    }
    for (int t = plan.Last(c) - 1; t >= plan.First(c); t -= backward_wave) {
      const int blocks = std::min(backward_wave, t - plan.First(c) + 1);
      WavefrontBackward<kCorners>(lanes, t, blocks, [&](int k) -> const Grid& { return state(c, k); }, g, rings.data(), partial);
    }
  }
  lanes.Scatter(g, d_x);
}

// Checks the shapes shared by both ops and fills `p`.
::tensorflow::Status ReadProblem(OpKernelContext* ctx, Problem* p) {
  const Tensor &x = ctx->input(0), &taps = ctx->input(1), &offsets = ctx->input(2);
  if (x.dims() != 4 || taps.dims() != 3 || taps.dim_size(1) != 9 || offsets.dims() != 2) {
    return tensorflow::errors::InvalidArgument("expected inputs (N, H, W, C), taps (D, 9, C), offsets (D, C)");
  }
  const int64 channels = x.dim_size(3);
  if (taps.dim_size(2) != channels || offsets.dim_size(1) != channels || offsets.dim_size(0) != taps.dim_size(0)) {
    return tensorflow::errors::InvalidArgument("the channel or block counts of inputs ", x.shape().DebugString(), ", taps ",
                                               taps.shape().DebugString(), " and offsets ", offsets.shape().DebugString(), " differ");
  }
  *p = Problem{x.flat<float>().data(), taps.flat<float>().data(), offsets.flat<float>().data(),
               static_cast<int>(x.dim_size(1)), static_cast<int>(x.dim_size(2)), static_cast<int>(taps.dim_size(0)),
               x.dim_size(0), channels};
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

  // fn(group index, its lanes) for every group of kLanes lanes, the groups shared among up to threads_ threads.
  template <typename Fn>
  void ForEachLaneGroup(OpKernelContext* ctx, const Problem& p, Fn fn) const {
    ParallelTasks(ctx, threads_, p.groups(), [&](int64 group) { fn(group, LaneGroup(p, group)); });
  }
};

// The checkpoints the forward op saves for the backward op: per lane group, states S, 2S, ..., D as bordered
// grids of kLanes-float vectors, (groups, C, Grid::Size * kLanes) floats.
::tensorflow::TensorShape CheckpointShape(const Problem& p, const Checkpoints& plan) {
  return ::tensorflow::TensorShape({p.groups(), plan.count, Grid::Size(p.h, p.w) * kLanes});
}

// Lane group `group`'s checkpoints within all of them (`CheckpointShape`'s layout).
Vec* GroupCheckpoints(Vec* all, int64 group, const Problem& p, const Checkpoints& plan) {
  return all + group * plan.count * Grid::Size(p.h, p.w);
}

class StencilStackOp : public StencilOpBase {
 public:
  explicit StencilStackOp(OpKernelConstruction* ctx) : StencilOpBase(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("keep_checkpoints", &keep_checkpoints_));
  }

  void Run(OpKernelContext* ctx, const Problem& p) override {
    Tensor *output = nullptr, *saved = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, ctx->input(0).shape(), &output));
    const Checkpoints plan = CheckpointPlan(p);
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, keep_checkpoints_ ? CheckpointShape(p, plan) : ::tensorflow::TensorShape({0, 0, 0}), &saved));
    float* y = output->flat<float>().data();
    ForEachLaneGroup(ctx, p, [&](int64 group, const LaneGroup& lanes) {
      // Every wave-th state in the two grids in turn, the others in rings; the checkpoints in `saved`.
      const int wave = WaveDepth(p.h, p.w, Grid::kRingRows);
      Vec* scratch = Scratch(2 * Grid::Size(p.h, p.w) + (wave - 1) * Grid::RingSize(p.w));
      const std::vector<Grid> grids = Grids(scratch, 2, p.h, p.w);
      const std::vector<Grid> rings = Rings(scratch + 2 * Grid::Size(p.h, p.w), wave - 1, p.h, p.w);
      std::vector<Grid> checkpoints;  // states S, 2S, ..., D
      if (keep_checkpoints_) {
        checkpoints = Grids(GroupCheckpoints(reinterpret_cast<Vec*>(saved->flat<float>().data()), group, p, plan), plan.count, p.h, p.w);
      }
      auto kept = [&](int t) -> const Grid* {
        if (keep_checkpoints_ && t > 0 && (t % plan.segment == 0 || t == p.depth)) return &checkpoints[(t - 1) / plan.segment];
        return t % wave == 0 || t == p.depth ? &grids[((t + wave - 1) / wave) % 2] : nullptr;
      };
      lanes.Gather(grids[0], p.x);
      if (corners_) lanes.Run<true>(0, p.depth, kept, rings.data(), wave);
      else lanes.Run<false>(0, p.depth, kept, rings.data(), wave);
      lanes.Scatter(*kept(p.depth), y);
    });
  }

 private:
  bool keep_checkpoints_;
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
    const Tensor& checkpoints = ctx->input(4);
    const Checkpoints plan = CheckpointPlan(p);
    OP_REQUIRES(ctx, checkpoints.NumElements() == 0 || checkpoints.shape() == CheckpointShape(p, plan),
                tensorflow::errors::InvalidArgument("checkpoints has shape ", checkpoints.shape().DebugString(), "; expected ",
                                                    CheckpointShape(p, plan).DebugString(), " (the forward op's) or none"));
    Vec* saved = checkpoints.NumElements() ? const_cast<Vec*>(reinterpret_cast<const Vec*>(checkpoints.flat<float>().data())) : nullptr;
    const float* up = upstream.flat<float>().data();
    float* dx = d_x->flat<float>().data();
    // Per group and lane: d taps and d offset of every block, summed per channel below, in a fixed order.
    std::vector<Vec> partial(p.groups() * p.depth * 10);
    ForEachLaneGroup(ctx, p, [&](int64 group, const LaneGroup& lanes) {
      Vec* mine = partial.data() + group * p.depth * 10;
      Vec* from = saved ? GroupCheckpoints(saved, group, p, plan) : nullptr;  // read only
      if (corners_) Backward<true>(lanes, up, dx, mine, from);
      else Backward<false>(lanes, up, dx, mine, from);
    });
    // Per block, tap and channel, the lanes' sums added in lane order, whichever thread made them (deterministic).
    const int64 entries = int64(p.depth) * 10;  // (t, q): q = 0..8 the taps, 9 the offset
    std::vector<double> sums(entries * p.channels, 0.0);
    for (int64 group = 0; group < p.groups(); ++group) {
      const int64 first = group * kLanes, count = std::min<int64>(kLanes, p.lanes() - first);
      for (int64 e = 0; e < entries; ++e) {
        float lanes[kLanes];
        Store(lanes, partial[group * entries + e]);
        double* sum = sums.data() + e * p.channels;
        for (int64 k = 0, c = first % p.channels; k < count; ++k, c = (c + 1 == p.channels ? 0 : c + 1)) sum[c] += lanes[k];
      }
    }
    float *dk = d_taps->flat<float>().data(), *db = d_offsets->flat<float>().data();
    for (int64 e = 0; e < entries; ++e) {
      const int64 t = e / 10, q = e % 10;
      for (int64 c = 0; c < p.channels; ++c) {
        (q < 9 ? dk[(t * 9 + q) * p.channels + c] : db[t * p.channels + c]) = static_cast<float>(sums[e * p.channels + c]);
      }
    }
  }
};

}  // namespace
}  // namespace pde_zoo

REGISTER_OP("PdeZooStencilStack")
    .Input("inputs: float")   // (N, H, W, C)
    .Input("taps: float")     // (D, 9, C)
    .Input("offsets: float")  // (D, C)
    .Output("outputs: float")      // (N, H, W, C): s_{D-1}
    .Output("checkpoints: float")  // for the backward op (`CheckpointShape`); (0, 0, 0) unless keep_checkpoints
    .Attr("keep_checkpoints: bool = false")
    .Attr("threads: int >= 1 = 1")
    .Attr("corners: bool = true")  // false: the corner taps are zero (a five-point stencil), never read
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->UnknownShapeOfRank(3));
      return ::tensorflow::OkStatus();
    });

REGISTER_OP("PdeZooStencilStackGrad")
    .Input("inputs: float")    // (N, H, W, C)
    .Input("taps: float")      // (D, 9, C)
    .Input("offsets: float")   // (D, C)
    .Input("upstream: float")  // (N, H, W, C): gradient of the loss w.r.t. s_{D-1}
    .Input("checkpoints: float")  // the forward op's, or empty: then the backward op makes them
    .Output("d_inputs: float")   // (N, H, W, C)
    .Output("d_taps: float")     // (D, 9, C), summed over the images; corners 0 when corners = false
    .Output("d_offsets: float")  // (D, C)
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
