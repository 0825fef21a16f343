// Adam on a list of float32 resource variables at once, as one TensorFlow CPU op.
//
// A thesis network of depth D has 5 D scalar weights (250 at D = 50). Keras's Adam on TF updates each
// with its own ResourceApplyAdam op, and each of the 2 N moment variables is one more input of the
// training step's graph; at batch 128 on CPU those per-variable costs (a few microseconds each, per
// step) are as large as the blocks' arithmetic. PdeZooApplyAdam(var_i, m_i, v_i, grad_i, ...), i = 1..N,
// is exactly ResourceApplyAdam on each (Kingma & Ba, Alg. 1, in TF's order of operations):
//     alpha = lr sqrt(1 - beta2^t) / (1 - beta1^t),
//     m += (g - m)(1 - beta1),   v += (g^2 - v)(1 - beta2),   var -= m alpha / (sqrt(v) + epsilon).
// The moments come as one (2N,) tensor of handles, packed once outside the training step (one graph
// input, not 2N; the variables themselves are inputs of the step already, as its gradient tape reads
// them). The variables found are kept from one call to the next (`Cached`). The 3N variables are locked
// together (exclusive, in mutex address order, as TF's training ops lock theirs), a buffer still shared
// with an earlier read is copied first (copy-on-write, as TF's PrepareToUpdateVariable), then the elements
// are updated in chunks shared among `threads` threads.
//
// Built and loaded by pde_zoo/layers/_native.py (one library with the stencil ops); used by
// pde_zoo/optimizers.py (Adam) through _tf_variables.py.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "pde_zoo_ops.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace pde_zoo {
namespace {

using ::tensorflow::errors::InvalidArgument;
using ::tensorflow::errors::FailedPrecondition;

constexpr int64 kChunk = 1 << 14;  // elements per update task

// "variable input i" or "slot j": an input named in error messages.
std::string InputName(const char* kind, int index) { return std::string(kind) + " " + std::to_string(index); }

// The variable behind `handle` (the `kind` input numbered `index`), checked to be a float32 variable.
::tensorflow::Status LookupFloatVariable(OpKernelContext* ctx, const ::tensorflow::ResourceHandle& handle, const char* kind, int index,
                                         ::tensorflow::core::RefCountPtr<::tensorflow::Var>* var) {
  TF_RETURN_IF_ERROR(::tensorflow::LookupResource(ctx, handle, var));
  if ((*var)->tensor()->dtype() != ::tensorflow::DT_FLOAT) {
    return InvalidArgument(InputName(kind, index), " is ", ::tensorflow::DataTypeString((*var)->tensor()->dtype()), ", not float32");
  }
  return ::tensorflow::OkStatus();
}

class ApplyAdamOp : public OpKernel {
 public:
  explicit ApplyAdamOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("N", &n_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("threads", &threads_));
  }

  void Compute(OpKernelContext* ctx) override {
    // Inputs: vars [0, N), slots (2N,) = m_1..m_N, v_1..v_N, grads [N + 1, 2N + 1), then the six scalars.
    const Tensor& slots = ctx->input(n_);
    OP_REQUIRES(ctx, slots.dims() == 1 && slots.dim_size(0) == 2 * n_,
                InvalidArgument("slots has shape ", slots.shape().DebugString(), "; expected (", 2 * n_, ",): m_1..m_N, v_1..v_N"));
    float scalar[6];  // beta1_power, beta2_power, lr, beta1, beta2, epsilon
    for (int k = 0; k < 6; ++k) {
      const Tensor& t = ctx->input(2 * n_ + 1 + k);
      OP_REQUIRES(ctx, t.NumElements() == 1, InvalidArgument("scalar input ", k, " has shape ", t.shape().DebugString()));
      scalar[k] = t.flat<float>()(0);
    }
    const float beta1_power = scalar[0], beta2_power = scalar[1], lr = scalar[2];
    const float beta1 = scalar[3], beta2 = scalar[4], epsilon = scalar[5];

    // vars[k * N + i]: variable i (k = 0), its m (k = 1) and its v (k = 2).
    std::vector<::tensorflow::core::RefCountPtr<::tensorflow::Var>> vars(3 * n_);
    {
      ::tensorflow::mutex_lock lock(cache_mu_);  // two steps of one function may run at once
      if (cache_.empty()) cache_.resize(3 * n_);
      for (const CachedVariable& c : cache_) {  // their reference counts are read next: fetch them all at once
        if (c.var) __builtin_prefetch(c.var.get());
      }
      for (int i = 0; i < n_; ++i) {
        OP_REQUIRES_OK(ctx, Cached(ctx, ctx->input(i), 0, "variable input", i, &cache_[i], &vars[i]));
      }
      for (int j = 0; j < 2 * n_; ++j) {
        OP_REQUIRES_OK(ctx, Cached(ctx, slots, j, "slot", j, &cache_[n_ + j], &vars[n_ + j]));
      }
    }
    std::vector<::tensorflow::mutex*> mutexes;
    for (auto& var : vars) mutexes.push_back(var->mu());
    std::sort(mutexes.begin(), mutexes.end());
    mutexes.erase(std::unique(mutexes.begin(), mutexes.end()), mutexes.end());
    std::vector<std::unique_lock<::tensorflow::mutex>> locks;  // released when Compute returns
    for (auto* mu : mutexes) locks.emplace_back(*mu);

    struct Task {
      float *var, *m, *v;
      const float* grad;
      int64 size;
    };
    std::vector<Task> tasks;
    for (int i = 0; i < n_; ++i) {
      const Tensor& grad = ctx->input(n_ + 1 + i);
      float* data[3];
      for (int k = 0; k < 3; ++k) {
        ::tensorflow::Var* var = vars[k * n_ + i].get();
        OP_REQUIRES(ctx, var->is_initialized, FailedPrecondition(k ? "a slot of " : "", InputName("variable input", i), " is not initialized"));
        OP_REQUIRES(ctx, var->tensor()->shape() == grad.shape(),
                    InvalidArgument(k ? "a slot of " : "", InputName("variable input", i), " has shape ", var->tensor()->shape().DebugString(),
                                    " and the gradient ", grad.shape().DebugString()));
        OP_REQUIRES_OK(ctx, PrepareToUpdate(ctx, var));
        data[k] = var->tensor()->flat<float>().data();
      }
      for (int64 begin = 0; begin < grad.NumElements(); begin += kChunk) {
        tasks.push_back({data[0] + begin, data[1] + begin, data[2] + begin, grad.flat<float>().data() + begin,
                         std::min(kChunk, grad.NumElements() - begin)});
      }
    }
    // Consecutive tasks grouped into units of >= kChunk elements (the last may be smaller): a model of many
    // small variables (pde2-50: 250 scalars) is then a few units, not one thread hand-off per variable.
    std::vector<size_t> unit_starts;
    for (size_t k = 0, filled = kChunk; k < tasks.size(); filled += tasks[k++].size) {
      if (filled >= kChunk) unit_starts.push_back(k), filled = 0;
    }
    unit_starts.push_back(tasks.size());
    const float alpha = lr * std::sqrt(1.0f - beta2_power) / (1.0f - beta1_power);
    const float keep1 = 1.0f - beta1, keep2 = 1.0f - beta2;
    // kLanes elements at a time (the same operations, lane by lane, as one element at a time).
    auto update = [&](float* var, float* m_io, float* v_io, const float* grad) {
      const Vec g = Load(grad), m = Load(m_io) + (g - Load(m_io)) * keep1, v = Load(v_io) + (g * g - Load(v_io)) * keep2;
      Store(m_io, m);
      Store(v_io, v);
      Store(var, Load(var) - (m * alpha) / (Sqrt(v) + epsilon));
    };
    ParallelTasks(ctx, threads_, static_cast<int64>(unit_starts.size()) - 1, [&](int64 unit) {
      for (size_t k = unit_starts[unit]; k < unit_starts[unit + 1]; ++k) {
        const Task& t = tasks[k];
        int64 e = 0;
        for (; e + kLanes <= t.size; e += kLanes) update(t.var + e, t.m + e, t.v + e, t.grad + e);
        if (e < t.size) {  // the last size mod kLanes elements, through zero-padded copies
          const int64 rest = t.size - e;
          float tail[3][kLanes] = {}, grad[kLanes] = {};  // var, m, v; the gradient
          float* parts[3] = {t.var + e, t.m + e, t.v + e};
          for (int i = 0; i < 3; ++i) std::copy_n(parts[i], rest, tail[i]);
          std::copy_n(t.grad + e, rest, grad);
          update(tail[0], tail[1], tail[2], grad);
          for (int i = 0; i < 3; ++i) std::copy_n(tail[i], rest, parts[i]);
        }
      }
    });
  }

 private:
  // The variable behind the handle at `where`, an element of `holder` (kept, so its buffer is not reused).
  struct CachedVariable {
    Tensor holder;
    const ::tensorflow::ResourceHandle* where = nullptr;
    ::tensorflow::core::RefCountPtr<::tensorflow::Var> var;
  };

  // *var = the variable behind handle `index` of `holder`: the one found last call where the handle is the
  // same element of the same buffer (a training step passes the same captured handle tensors every time;
  // tensors are immutable and the cache keeps the buffer alive, so it holds the same handle) and the variable
  // is alive, else looked up in the resource manager (~0.5 us each: 0.38 ms a step for pde2-50's 768
  // handles) and cached. A variable deleted meanwhile is held by the cache alone (the resource manager held
  // the other reference), so it is looked up again: a new variable of the same name is never mistaken for it.
  // (Its memory is freed then, or with the kernel, when the step function holding it is dropped.)
  static ::tensorflow::Status Cached(OpKernelContext* ctx, const Tensor& holder, int64 index, const char* kind, int number,
                                     CachedVariable* cached, ::tensorflow::core::RefCountPtr<::tensorflow::Var>* var) {
    const ::tensorflow::ResourceHandle* where = holder.flat<::tensorflow::ResourceHandle>().data() + index;
    if (where != cached->where || !cached->var || cached->var->RefCountIsOne()) {
      cached->var.reset();
      cached->where = nullptr;
      TF_RETURN_IF_ERROR(LookupFloatVariable(ctx, *where, kind, number, &cached->var));
      cached->holder = holder;
      cached->where = where;
    }
    cached->var->Ref();
    var->reset(cached->var.get());
    return ::tensorflow::OkStatus();
  }

  // A buffer still aliased by a read (or a variable in copy-on-read mode) is copied before the update, so
  // the reader keeps the old values (TF's PrepareToUpdateVariable).
  static ::tensorflow::Status PrepareToUpdate(OpKernelContext* ctx, ::tensorflow::Var* var) {
    Tensor* tensor = var->tensor();
    if (!var->copy_on_read_mode.load() && tensor->RefCountIsOne()) return ::tensorflow::OkStatus();
    Tensor copy;
    TF_RETURN_IF_ERROR(ctx->allocate_temp(::tensorflow::DT_FLOAT, tensor->shape(), &copy));
    std::copy_n(tensor->flat<float>().data(), tensor->NumElements(), copy.flat<float>().data());
    *tensor = copy;
    return ::tensorflow::OkStatus();
  }

  int n_, threads_;
  ::tensorflow::mutex cache_mu_;
  std::vector<CachedVariable> cache_ TF_GUARDED_BY(cache_mu_);
};

}  // namespace
}  // namespace pde_zoo

REGISTER_OP("PdeZooApplyAdam")
    .Input("vars: N * resource")
    .Input("slots: resource")  // (2N,): the handles of m_1..m_N, v_1..v_N, packed (one graph input, not 2N)
    .Input("grads: N * float")
    .Input("beta1_power: float")
    .Input("beta2_power: float")
    .Input("lr: float")
    .Input("beta1: float")
    .Input("beta2: float")
    .Input("epsilon: float")
    .Attr("N: int >= 1")
    .Attr("threads: int >= 1 = 1")
    .SetIsStateful()
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext*) { return ::tensorflow::OkStatus(); });

REGISTER_KERNEL_BUILDER(Name("PdeZooApplyAdam").Device(::tensorflow::DEVICE_CPU), pde_zoo::ApplyAdamOp);
