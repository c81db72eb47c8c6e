//===- OpSemantics.h - Op semantics shared by the CPU and CUDA kernels -*- C++ -*-===//
//
// Device-neutral op semantics: the validation, shape logic and error messages
// that the CPU kernels (cpu/) and the CUDA kernels (cuda/) share, so that both
// devices accept, reject and shape a node alike, with the same words. They
// read only dtypes, shapes, attributes and host inputs, never the data of a
// device tensor.
//
// The generic helpers are defined in OpSemantics.cpp; each op's planner
// (planLayerNorm, planBinaryOp, sliceView, ...) is defined next to its CPU
// kernel (the file named in its comment). The namespace is qn::rt::cpu for
// history: the CPU kernels are the reference the CUDA kernels follow.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "Activations.h"
#include "qn/runtime/Kernel.h"
#include "qn/runtime/Tensor.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/Twine.h"
#include "llvm/Support/Error.h"

namespace qn::rt::cpu {

//===----------------------------------------------------------------------===//
// Generic checks and helpers (OpSemantics.cpp)
//===----------------------------------------------------------------------===//

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

/// The required `axis` attribute of a collective (AllGather, ReduceScatter),
/// normalised against x's rank (CpuCollectives.cpp).
llvm::Error collectiveAxis(const KernelContext &ctx, const Tensor &x, int64_t &axis);

/// Multidirectional (NumPy) broadcast of two shapes; false when incompatible.
bool broadcastShapes(llvm::ArrayRef<int64_t> a, llvm::ArrayRef<int64_t> b,
                     std::vector<int64_t> &out);

/// float16 or bfloat16.
inline bool isHalfLike(DType t) { return t == DType::Float16 || t == DType::BFloat16; }

/// Row-major strides (in elements) of `shape`.
llvm::SmallVector<int64_t, 8> contiguousStrides(llvm::ArrayRef<int64_t> shape);

//===----------------------------------------------------------------------===//
// Validation and shape logic shared by the CPU and CUDA kernels (one place for
// the checks and their messages). They read only dtypes, shapes, attributes
// and host inputs (the Reduce ops' axes input).
//===----------------------------------------------------------------------===//

/// LayerNormalization (CpuNorm.cpp): arity, dtype (float32/64, float16, bfloat16), rank,
/// axis, epsilon, and Scale/B (X's dtype, broadcasting to X.shape[axis:]).
struct LayerNormPlan {
  int64_t axis = 0;
  int64_t rows = 1, cols = 1; // X as [rows, cols] = [prod(shape[:axis]), prod(shape[axis:])]
  float eps = 1e-5f;
  std::vector<int64_t> normShape; // X.shape[axis:]
  std::vector<int64_t> statShape; // X.shape[:axis] + [1] * (rank - axis): Mean, InvStdDev
};
llvm::Error planLayerNorm(const KernelContext &ctx, LayerNormPlan &p);

/// ReduceMean / ReduceSum / ReduceMax (CpuNorm.cpp): axes from the attribute (opset < 18,
/// ReduceSum < 13) or the input, keepdims, noop_with_empty_axes.
/// Mean, Sum and Max run on the CPU and CUDA devices; the others (ONNX's
/// ReduceMin, ReduceProd, ReduceL1, ReduceL2, ReduceSumSquare, ReduceLogSum,
/// ReduceLogSumExp) on the CPU.
enum class ReduceKind { Mean, Sum, Max, Min, Prod, L1, L2, SumSquare, LogSum, LogSumExp };
struct ReducePlan {
  bool identity = false;          // noop_with_empty_axes and no axes: Y = X
  std::vector<bool> reduced;      // per axis of X
  std::vector<int64_t> outShape;  // Y's shape
  std::vector<int64_t> perm;      // the kept axes, then the reduced axes
  int64_t rows = 1, len = 1;      // outputs, elements reduced into each
};
llvm::Error planReduce(const KernelContext &ctx, ReduceKind kind, ReducePlan &p);

/// Softmax / LogSoftmax (CpuNorm.cpp): X viewed as [outer, n, inner], normalised along n
/// (opset < 13: coerced to 2-D at axis, inner = 1).
struct SoftmaxPlan {
  int64_t axis = 0;
  int64_t outer = 1, n = 1, inner = 1;
};
llvm::Error planSoftmax(const KernelContext &ctx, SoftmaxPlan &p);

/// CumSum (CpuNorm.cpp): x (float32/64, float16, bfloat16, int32, int64) viewed as
/// [outer, n, inner] and summed along n; the axis input (input 1: a 0-d or one-element
/// int32/int64 tensor, read on the host), `exclusive` and `reverse`.
struct CumSumPlan {
  int64_t axis = 0;
  int64_t outer = 1, n = 1, inner = 1;
  bool exclusive = false, reverse = false;
};
llvm::Error planCumSum(const KernelContext &ctx, CumSumPlan &p);

/// MatMul (CpuMatMul.cpp): arity, dtypes (A's and B's the same: float32/64, float16,
/// bfloat16), ranks, K, the broadcast batch, the output's size and the BLAS
/// int range. A rank-1 A or B is a row / column (M or N is 1, left out of
/// outShape).
struct MatMulPlan {
  int64_t M = 0, N = 0, K = 0;
  std::vector<int64_t> batch;                     // broadcast batch shape
  llvm::SmallVector<int64_t, 8> strideA, strideB; // per batch dim, in matrices (0: broadcast)
  std::vector<int64_t> outShape;
  int64_t numel = 0;    // elements of the output
  int64_t matrices = 0; // prod(batch); 0 when the output is empty
  /// Steps the index `idx` over batch dims [0, idx.size()) (the last
  /// fastest; back to all zeros after the last), and the operands' offsets
  /// offA / offB (in matrices) with it.
  void nextBatch(llvm::MutableArrayRef<int64_t> idx, int64_t &offA, int64_t &offB) const;
};
llvm::Error planMatMul(const KernelContext &ctx, MatMulPlan &p);

/// Gemm (CpuMatMul.cpp): arity, dtypes (A, B and C the same: float32/64, float16, bfloat16),
/// 2-D A and B, transA / transB / alpha / beta, K, C broadcasting to [M, N]
/// (rank <= 2, each dim 1 or full), and the BLAS int range.
struct GemmPlan {
  bool transA = false, transB = false;
  float alpha = 1.0f, beta = 1.0f;
  int64_t M = 0, N = 0, K = 0;
};
llvm::Error planGemm(const KernelContext &ctx, GemmPlan &p);

/// Conv (CpuConv.cpp): arity (X, W, optional B), dtypes (X, W and B the same:
/// float32/64, float16, bfloat16), X [N, C, D1..Dn] with n = 1..3, W [M,
/// C/group, k1..kn], B [M]; kernel_shape (when given, W's), strides,
/// dilations, pads, auto_pad (NOTSET, VALID, SAME_UPPER, SAME_LOWER), group.
/// The spatial dims are kept as 3 (leading ones of size 1 for 1-D and 2-D:
/// in 1, k 1, out 1, stride 1, dilation 1, no pads) so that both devices run
/// one im2col: column matrix [N, C * prod(k), prod(out)] (per group g rows
/// [g*K, (g+1)*K)), then per image and group Y[Mg, P] = W_g[Mg, K] col_g[K, P].
struct ConvPlan {
  int nd = 0;                           // spatial dims of the node (1..3)
  int64_t N = 0, C = 0, M = 0, G = 1;   // batch, in/out channels, groups
  int64_t Cg = 0, Mg = 0;               // channels per group
  int64_t in[3] = {1, 1, 1}, k[3] = {1, 1, 1}, out[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1}, dil[3] = {1, 1, 1}, padBegin[3] = {0, 0, 0};
  int64_t K = 0;         // Cg * prod(k): rows of one group's column matrix
  int64_t P = 0;         // prod(out): its columns
  int64_t inSpatial = 0; // prod(in)
  bool hasBias = false;
  /// Kernel 1, stride 1, no pads: the column matrix is X itself.
  bool pointwise = false;
  std::vector<int64_t> outShape;
};
llvm::Error planConv(const KernelContext &ctx, ConvPlan &p);

/// Add Sub Mul Div Pow Equal Less Greater (CpuElementwise.cpp): arity, dtypes
/// (Pow's exponent may have another numeric type, computed in `expType`:
/// float64 for a float64 base, else float32; Undefined for the other ops),
/// then the broadcast output shape and its size.
enum class BinaryOp { Add, Sub, Mul, Div, Pow, Equal, Less, Greater };
struct BinaryShape {
  DType expType = DType::Undefined;
  std::vector<int64_t> outShape;
  int64_t numel = 0;
};
llvm::Error planBinaryOp(const KernelContext &ctx, BinaryOp op, BinaryShape &s);

/// The broadcast shape of all `ts`, checked for size overflow (CpuElementwise.cpp).
llvm::Error broadcastAll(const KernelContext &ctx, llvm::ArrayRef<const Tensor *> ts,
                         std::vector<int64_t> &out);
/// The checks of CpuElementwise.cpp's materialised broadcasting ops, in the
/// kernels' order, and their output shape: And / Or (both bool), GreaterOrEqual /
/// LessOrEqual (one numeric dtype), Max / Min (variadic, one numeric dtype),
/// Where (bool condition, X and Y of one dtype).
llvm::Error planLogic(const KernelContext &ctx, std::vector<int64_t> &outShape);
llvm::Error planCompare(const KernelContext &ctx, std::vector<int64_t> &outShape);
llvm::Error planMinMax(const KernelContext &ctx, std::vector<int64_t> &outShape);
llvm::Error planWhere(const KernelContext &ctx, std::vector<int64_t> &outShape);

/// Not (CpuElementwise.cpp): arity and dtype (bool).
llvm::Error checkNot(const KernelContext &ctx);

/// Cast (CpuElementwise.cpp): arity, the `to` attribute and the input's dtype; `to` is the target.
llvm::Error planCast(const KernelContext &ctx, DType &to);

/// Shape and attribute logic of the data-movement kernels (CpuShape.cpp),
/// shared with the CUDA kernels (runtime/lib/cuda/CudaShape.cpp) so that both devices check a
/// node alike: each runs the CPU kernel's checks in the same order (arity,
/// attributes, host-read inputs, dtype) and says what to copy, without
/// touching the data of input 0.

/// Output element with multi-index i reads input element
/// base + sum_k i_k * strides[k] (Transpose, Slice).
struct StridedView {
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;
  int64_t base = 0;
};
llvm::Expected<StridedView> transposeView(const KernelContext &ctx);
llvm::Expected<StridedView> sliceView(const KernelContext &ctx);
/// Concat: the normalised axis and the output shape.
llvm::Error concatShape(const KernelContext &ctx, int64_t &axis, std::vector<int64_t> &outShape);
/// Split: the normalised axis and each output's size along it.
llvm::Error splitSizes(const KernelContext &ctx, int64_t &axis, std::vector<int64_t> &sizes);
/// Expand: the output shape (input 0 broadcast with the shape input).
llvm::Error expandShape(const KernelContext &ctx, std::vector<int64_t> &shape);
/// Gather: data viewed as [outer, n, inner], output as [outer, count, inner];
/// checks dtypes and the axis (the index values are checked by the kernel).
struct GatherShape {
  int64_t axis = 0, outer = 1, n = 0, inner = 1, count = 0;
  std::vector<int64_t> outShape;
};
llvm::Error gatherShape(const KernelContext &ctx, GatherShape &g);
/// GatherND and ScatterND (CpuShape.cpp): `data` viewed as [batch, ...], the last axis
/// of `indices` (int64) holding k-tuples that index data axes [b, b + k) (b =
/// batch_dims; ScatterND has none); each tuple selects a slice of the trailing
/// axes. Tuple t of batch i reads / writes the slice at element offset
///   i * dataBatch + sum_m idx_m * strides[m]   (idx_m + dims[m] when negative)
/// Index values are checked by the kernels (an error on the CPU, the fault word
/// on CUDA).
struct IndexNDPlan {
  int64_t batch = 1;     // prod(data.shape[:b])
  int64_t tuples = 0;    // tuples per batch: prod(indices.shape[b:-1])
  int64_t slice = 1;     // elements per slice: prod(data.shape[b + k:])
  int64_t dataBatch = 0; // elements of data per batch: prod(data.shape[b:])
  int64_t firstAxis = 0; // b: the data axis of idx_0 (for messages)
  std::vector<int64_t> dims, strides; // per tuple component: size and element stride
  std::vector<int64_t> outShape;      // GatherND: indices.shape[:-1] + data.shape[b + k:]
};
llvm::Error planGatherND(const KernelContext &ctx, IndexNDPlan &p);
/// ScatterND's `reduction` (opset 16: none/add/mul; 18: max/min too).
enum class ScatterReduction { None, Add, Mul, Max, Min };
/// ScatterND: data (any dtype; a reduction needs float32/64, float16, bfloat16, int32 or
/// int64), indices, and updates of data's dtype and shape indices.shape[:-1] +
/// data.shape[k:]. The output has data's shape.
llvm::Error planScatterND(const KernelContext &ctx, IndexNDPlan &p, ScatterReduction &red);

/// Trilu: the diagonal offset k (as given, not yet clamped) and `upper`.
llvm::Error triluParams(const KernelContext &ctx, int64_t &k, bool &upper);

//===- Parametric unary ops, IsNaN, Clip, Dropout (CpuElementwise.cpp) ---===//

/// The op's row of kActs, or null.
const ActInfo *findAct(llvm::StringRef opType);
/// Checks an Activations.h op (one input of a dtype it takes) and reads its
/// attributes.
llvm::Error planAct(const KernelContext &ctx, const ActInfo &info, ActParams &p);
/// IsNaN: one float-type input.
llvm::Error checkIsNaN(const KernelContext &ctx);
/// Clip: x of a float type or int32/int64/int8; the bounds from the
/// optional inputs 1 and 2 (one-element tensors of x's dtype, read on the
/// host) or, before opset 11, the min/max attributes. Absent bounds are
/// +-infinity (the dtype's limits for integers).
struct ClipPlan {
  bool hasLo = false, hasHi = false;
  double lo = 0, hi = 0;
};
llvm::Error planClip(const KernelContext &ctx, ClipPlan &p);
/// Dropout in inference: the output is the input, the optional mask all
/// true. A constant training_mode of true with a ratio above 0 is refused
/// (plans are for inference).
llvm::Error planDropout(const KernelContext &ctx, bool &wantMask);

} // namespace qn::rt::cpu
