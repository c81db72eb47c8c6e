//===- CpuCommon.h - Helpers shared by the CPU kernels ---------*- C++ -*-===//
//
// Internal to runtime/lib/cpu.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "qn/runtime/Kernel.h"
#include "qn/runtime/Tensor.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/Error.h"

namespace qn::rt::cpu {

/// "[2,3]".
std::string shapeStr(llvm::ArrayRef<int64_t> shape);
/// "float32[2,3]" or "<missing>".
std::string describe(const Tensor *t);

/// An error "<node label>: <msg>".
llvm::Error kernelError(const KernelContext &ctx, const llvm::Twine &msg);

/// Input `i`, or null when the node leaves it out (or it is past the end).
inline const Tensor *input(const KernelContext &ctx, size_t i) {
  if (i >= ctx.inputs.size() || !ctx.inputs[i] || !ctx.inputs[i]->defined())
    return nullptr;
  return ctx.inputs[i];
}

/// Checks that inputs [0, required) are present, that there are at most
/// `maxInputs` inputs, and that there is at least one output slot.
llvm::Error checkArity(const KernelContext &ctx, size_t required, size_t maxInputs,
                       size_t outputs = 1);

/// An error saying that `t`'s dtype is not supported by this op.
llvm::Error unsupportedDType(const KernelContext &ctx, const Tensor &t, llvm::StringRef supported);

/// Normalises `axis` in [-rank, rank) (or [-rank, rank] when `inclusive`).
llvm::Error normalizeAxis(const KernelContext &ctx, int64_t &axis, int64_t rank,
                          llvm::StringRef what = "axis", bool inclusive = false);

/// Reads a 0-d or 1-D int64/int32 tensor as int64 values.
llvm::Expected<std::vector<int64_t>> readInts(const KernelContext &ctx, const Tensor &t,
                                              llvm::StringRef what);

/// Multidirectional (NumPy) broadcast of two shapes; false when incompatible.
bool broadcastShapes(llvm::ArrayRef<int64_t> a, llvm::ArrayRef<int64_t> b,
                     std::vector<int64_t> &out);

/// float16 / bfloat16 <-> float32 element conversion of whole tensors.
Tensor toFloat32(const Tensor &t);
Tensor fromFloat32(const Tensor &t, DType to);
inline bool isHalfLike(DType t) { return t == DType::Float16 || t == DType::BFloat16; }

/// Copies a strided view of `in` into contiguous `out`: out element with
/// multi-index i reads in byte-element at base + sum_k i_k * inStrides[k]
/// (strides in elements, may be negative or zero). `elemSize` is 1, 2, 4 or 8.
void stridedCopy(const void *in, int64_t base, llvm::ArrayRef<int64_t> outShape,
                 llvm::ArrayRef<int64_t> inStrides, void *out, size_t elemSize);

/// Row-major strides (in elements) of `shape`.
llvm::SmallVector<int64_t, 8> contiguousStrides(llvm::ArrayRef<int64_t> shape);

void registerMatMulKernels(KernelRegistry &reg);
void registerElementwiseKernels(KernelRegistry &reg);
void registerShapeKernels(KernelRegistry &reg);
void registerCollectiveKernels(KernelRegistry &reg);
void registerTransformerKernels(KernelRegistry &reg);

} // namespace qn::rt::cpu
