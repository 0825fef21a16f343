// What the C++ ops of pde_zoo share: the SIMD vector type of the instruction set the library is compiled
// for, and running a kernel's independent tasks on TF's inter-op threads.
#ifndef PDE_ZOO_OPS_H_
#define PDE_ZOO_OPS_H_

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "tensorflow/core/framework/op_kernel.h"

namespace pde_zoo {

using ::tensorflow::int64;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;

// kLanes floats per SIMD vector (Vec, GCC's vector extension) and kRegisters vector registers.
#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kRegisters = 32;
#elif defined(__AVX2__)
constexpr int kLanes = 8;
constexpr int kRegisters = 16;
#else
constexpr int kLanes = 4;  // 128 bits: SSE2 on x86-64 (its baseline)
constexpr int kRegisters = 16;
#endif
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

inline Vec Load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(Vec));
  return v;
}
inline void Store(float* p, Vec v) { std::memcpy(p, &v, sizeof(Vec)); }

// max(v, 0) lane by lane, +0 for -0 and NaN (as v > 0 ? v : 0): one vmaxps where the compare-and-select
// form costs two instructions on the two vector ports.
inline Vec Relu(Vec v) {
#if defined(__AVX512F__)
  return _mm512_max_ps(v, Vec{});
#elif defined(__AVX2__)
  return _mm256_max_ps(v, Vec{});
#else
  return v > Vec{} ? v : Vec{};
#endif
}

// The square root lane by lane (IEEE-rounded, as std::sqrt).
inline Vec Sqrt(Vec v) {
#if defined(__AVX512F__)
  return _mm512_sqrt_ps(v);
#elif defined(__AVX2__)
  return _mm256_sqrt_ps(v);
#elif defined(__SSE2__)
  return _mm_sqrt_ps(v);
#else
  for (int k = 0; k < kLanes; ++k) v[k] = std::sqrt(v[k]);
  return v;
#endif
}

// Image ranges per thread in the backward ops: each range sums its own weight gradients (added in range
// order, so deterministic); several per thread let a thread that is free take more of them while the
// other is still busy with another op.
constexpr int kRangesPerThread = 4;

// Runs task(0..count-1), each exactly once, on the calling thread and up to `threads - 1` closures
// scheduled on TF's inter-op pool. Tasks are taken from a shared counter, and the caller waits only
// for tasks already taken, so a helper still queued behind other ops never blocks it.
inline void ParallelTasks(::tensorflow::OpKernelContext* ctx, int threads, ::tensorflow::int64 count, const std::function<void(::tensorflow::int64)>& task) {
  struct Shared {
    std::atomic<::tensorflow::int64> next{0};
    ::tensorflow::int64 done = 0;
    std::mutex mu;
    std::condition_variable cv;
  };
  auto shared = std::make_shared<Shared>();
  auto work = [shared, count, &task] {
    for (::tensorflow::int64 n; (n = shared->next.fetch_add(1)) < count;) {
      task(n);
      std::lock_guard<std::mutex> lock(shared->mu);
      if (++shared->done == count) shared->cv.notify_all();
    }
  };
  const int helpers = static_cast<int>(std::min<::tensorflow::int64>(threads, count)) - 1;
  for (int k = 0; k < helpers; ++k) (*ctx->runner())(work);  // a late helper finds no task and returns
  work();
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->cv.wait(lock, [&] { return shared->done == count; });
}

// The attributes of the stencil ops: `threads` (how many threads may share the work) and `corners`
// (false: a five-point stencil, the corner taps never read and their gradient reported as zero).
class ThreadsCornersOp : public OpKernel {
 public:
  explicit ThreadsCornersOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("threads", &threads_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("corners", &corners_));
  }

 protected:
  int threads_;
  bool corners_;
};

}  // namespace pde_zoo

#endif  // PDE_ZOO_OPS_H_
