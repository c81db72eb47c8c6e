//===- CpuMatMul.cpp - MatMul and Gemm through oneDNN / OpenBLAS -------------------===//
#include "../StrCat.h"
#include "CpuCommon.h"

#include <climits>
#include <cstring>

#include <cblas.h>
#include <cstdlib>
#include <string>

#ifdef QN_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

#include "onnx/onnx_pb.h"

namespace qn::rt::cpu {

#ifdef QN_HAVE_ONEDNN
/// Whether float32 GEMMs go through oneDNN: where the CPU has AVX-512, whose
/// kernels oneDNN's JIT uses while Debian's OpenBLAS runs its Haswell ones
/// (about half the throughput). On an AVX2-only CPU OpenBLAS is the faster
/// (AMD EPYC, one thread: 85 against 35 GFLOP/s at 256x1024x1024, 89
/// against 76 at 256x1024x4096). QN_GEMM=onednn or openblas overrides.
bool useOneDnn() {
  static const bool use = [] {
    if (const char *e = std::getenv("QN_GEMM"))
      return std::string(e) == "onednn";
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return use;
}
#endif

/// Row-major C[M,N] = alpha * op(A) op(B) + beta * C. float32 GEMMs go
/// through oneDNN's sgemm where that is the faster (useOneDnn), else through
/// OpenBLAS.
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
          int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
#ifdef QN_HAVE_ONEDNN
  if (useOneDnn() && dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb,
                                beta, C, ldc) == dnnl_success)
    return;
#endif
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), alpha, A,
              static_cast<blasint>(lda), B, static_cast<blasint>(ldb), beta, C,
              static_cast<blasint>(ldc));
}
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, double alpha, const double *A,
          int64_t lda, const double *B, int64_t ldb, double beta, double *C, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<blasint>(M), static_cast<blasint>(N), static_cast<blasint>(K), alpha, A,
              static_cast<blasint>(lda), B, static_cast<blasint>(ldb), beta, C,
              static_cast<blasint>(ldc));
}

namespace {

bool fitsBlas(int64_t v) { return v <= static_cast<int64_t>(INT_MAX); }

//===----------------------------------------------------------------------===//
// MatMul
//===----------------------------------------------------------------------===//

template <typename T> void runMatMul(const MatMulPlan &p, const T *A, const T *B, T *Y) {
  const int64_t M = p.M, N = p.N, K = p.K;
  int64_t nb = 1;
  for (int64_t d : p.batch)
    nb *= d;
  if (nb == 0 || M == 0 || N == 0)
    return;
  if (K == 0) { // empty sum
    std::memset(Y, 0, static_cast<size_t>(nb * M * N) * sizeof(T));
    return;
  }
  bool bShared = true, aFull = true;
  for (size_t i = 0; i < p.batch.size(); ++i) {
    if (p.strideB[i] != 0)
      bShared = false;
    if (p.strideA[i] == 0 && p.batch[i] != 1)
      aFull = false;
  }
  if (bShared && aFull) {
    // One GEMM: A's batch folds into its rows.
    gemm(false, false, nb * M, N, K, T(1), A, K, B, N, T(0), Y, N);
    return;
  }
  llvm::SmallVector<int64_t, 8> idx(p.batch.size(), 0);
  int64_t offA = 0, offB = 0;
  for (int64_t b = 0; b < nb; ++b) {
    gemm(false, false, M, N, K, T(1), A + offA * M * K, K, B + offB * K * N, N, T(0), Y + b * M * N,
         N);
    p.nextBatch(idx, offA, offB);
  }
}

} // namespace

void MatMulPlan::nextBatch(llvm::MutableArrayRef<int64_t> idx, int64_t &offA,
                           int64_t &offB) const {
  for (int64_t k = static_cast<int64_t>(idx.size()) - 1; k >= 0; --k) {
    offA += strideA[k];
    offB += strideB[k];
    if (++idx[k] < batch[k])
      break;
    offA -= strideA[k] * batch[k];
    offB -= strideB[k] * batch[k];
    idx[k] = 0;
  }
}

llvm::Error planMatMul(const KernelContext &ctx, MatMulPlan &p) {
  if (auto e = checkArity(ctx, 2, 2))
    return e;
  const Tensor &a = *input(ctx, 0), &b = *input(ctx, 1);
  if (a.dtype() != b.dtype())
    return kernelError(ctx, "input dtypes differ: A " + a.describe() + ", B " + b.describe());
  DType dt = a.dtype();
  if (dt != DType::Float && dt != DType::Double && !isHalfLike(dt))
    return unsupportedDType(ctx, a, "float32, float64, float16, bfloat16");
  if (a.rank() == 0 || b.rank() == 0)
    return kernelError(ctx, "MatMul inputs must have rank >= 1: A " + a.describe() + ", B " +
                                b.describe());
  p.M = a.rank() == 1 ? 1 : a.dim(-2);
  p.K = a.dim(-1);
  int64_t kb = b.rank() == 1 ? b.dim(0) : b.dim(-2);
  p.N = b.rank() == 1 ? 1 : b.dim(-1);
  if (p.K != kb)
    return kernelError(ctx, strCat("inner dimensions differ: A ", a.describe(), " has K=", p.K,
                                   ", B ", b.describe(), " has K=", kb));
  llvm::ArrayRef<int64_t> batchA =
      llvm::ArrayRef<int64_t>(a.shape()).drop_back(std::min<int64_t>(2, a.rank()));
  llvm::ArrayRef<int64_t> batchB =
      llvm::ArrayRef<int64_t>(b.shape()).drop_back(std::min<int64_t>(2, b.rank()));
  if (!broadcastShapes(batchA, batchB, p.batch))
    return kernelError(ctx, "batch dimensions do not broadcast: A " + a.describe() + ", B " +
                                b.describe());
  size_t r = p.batch.size();
  p.strideA.assign(r, 0);
  p.strideB.assign(r, 0);
  {
    int64_t s = 1;
    for (size_t i = 0; i < batchA.size(); ++i) {
      size_t d = batchA.size() - 1 - i, o = r - 1 - i;
      p.strideA[o] = batchA[d] == 1 ? 0 : s;
      s *= batchA[d];
    }
    s = 1;
    for (size_t i = 0; i < batchB.size(); ++i) {
      size_t d = batchB.size() - 1 - i, o = r - 1 - i;
      p.strideB[o] = batchB[d] == 1 ? 0 : s;
      s *= batchB[d];
    }
  }
  p.outShape = p.batch;
  if (a.rank() != 1)
    p.outShape.push_back(p.M);
  if (b.rank() != 1)
    p.outShape.push_back(p.N);
  if (!checkedNumel(p.outShape, dtypeSize(dt), p.numel))
    return kernelError(ctx, "output shape overflows: " + shapeStr(p.outShape));
  int64_t nb = p.numel == 0 ? 0 : 1;
  for (int64_t d : p.batch)
    nb *= d;
  if (!fitsBlas(p.K) || !fitsBlas(p.N) || !fitsBlas(p.M) || (nb > 0 && !fitsBlas(nb * p.M)))
    return kernelError(ctx, "matrix dimensions exceed the BLAS int range: A " + a.describe() +
                                ", B " + b.describe());
  p.matrices = nb;
  return llvm::Error::success();
}

namespace {

llvm::Error matMulKernel(KernelContext &ctx) {
  MatMulPlan p;
  if (auto e = planMatMul(ctx, p))
    return e;
  const Tensor &a = *input(ctx, 0), &b = *input(ctx, 1);
  DType dt = a.dtype();
  Tensor y = Tensor::empty(dt, p.outShape);
  if (dt == DType::Float) {
    runMatMul(p, a.data<float>(), b.data<float>(), y.data<float>());
  } else if (dt == DType::Double) {
    runMatMul(p, a.data<double>(), b.data<double>(), y.data<double>());
  } else {
    Tensor af = toFloat32(a), bf = toFloat32(b);
    Tensor yf = Tensor::empty(DType::Float, p.outShape);
    runMatMul(p, af.data<float>(), bf.data<float>(), yf.data<float>());
    y = fromFloat32(yf, dt);
  }
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

//===----------------------------------------------------------------------===//
// Gemm
//===----------------------------------------------------------------------===//

template <typename T>
void runGemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, T beta, const T *A,
             const T *B, const Tensor *C, T *Y) {
  if (M == 0 || N == 0)
    return;
  bool useC = C && beta != T(0);
  if (useC) {
    // Broadcast C (rank <= 2, dims 1 or full) into Y, then Y = alpha AB + beta Y.
    int64_t c0 = C->rank() == 2 ? C->dim(0) : 1;
    int64_t c1 = C->rank() >= 1 ? C->dim(-1) : 1;
    const T *c = C->data<T>();
    for (int64_t i = 0; i < M; ++i) {
      const T *row = c + (c0 == 1 ? 0 : i) * c1;
      T *y = Y + i * N;
      if (c1 == 1) {
        for (int64_t j = 0; j < N; ++j)
          y[j] = row[0];
      } else {
        std::memcpy(y, row, static_cast<size_t>(N) * sizeof(T));
      }
    }
  }
  if (K == 0) {
    if (!useC)
      std::memset(Y, 0, static_cast<size_t>(M * N) * sizeof(T));
    else
      for (int64_t i = 0; i < M * N; ++i)
        Y[i] *= beta;
    return;
  }
  int64_t lda = ta ? M : K, ldb = tb ? K : N;
  gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, useC ? beta : T(0), Y, N);
}

} // namespace

llvm::Error planGemm(const KernelContext &ctx, GemmPlan &p) {
  if (auto e = checkArity(ctx, 2, 3))
    return e;
  const Tensor &a = *input(ctx, 0), &b = *input(ctx, 1);
  const Tensor *c = input(ctx, 2);
  DType dt = a.dtype();
  if (b.dtype() != dt || (c && c->dtype() != dt))
    return kernelError(ctx, "input dtypes differ: A " + a.describe() + ", B " + b.describe() +
                                ", C " + describe(c));
  if (dt != DType::Float && dt != DType::Double && !isHalfLike(dt))
    return unsupportedDType(ctx, a, "float32, float64, float16, bfloat16");
  if (a.rank() != 2 || b.rank() != 2)
    return kernelError(ctx, "Gemm inputs A and B must be 2-D: A " + a.describe() + ", B " +
                                b.describe());
  bool ta = attrInt(ctx.node, "transA", 0) != 0;
  bool tb = attrInt(ctx.node, "transB", 0) != 0;
  float alpha = attrFloat(ctx.node, "alpha", 1.0f);
  float beta = attrFloat(ctx.node, "beta", 1.0f);
  int64_t M = ta ? a.dim(1) : a.dim(0);
  int64_t K = ta ? a.dim(0) : a.dim(1);
  int64_t kb = tb ? b.dim(1) : b.dim(0);
  int64_t N = tb ? b.dim(0) : b.dim(1);
  if (K != kb)
    return kernelError(ctx, strCat("inner dimensions differ: A ", a.describe(),
                                   " (transA=", int(ta), ") has K=", K, ", B ", b.describe(),
                                   " (transB=", int(tb), ") has K=", kb));
  if (c) {
    bool ok = c->rank() <= 2;
    if (ok && c->rank() == 2)
      ok = (c->dim(0) == 1 || c->dim(0) == M) && (c->dim(1) == 1 || c->dim(1) == N);
    if (ok && c->rank() == 1)
      ok = c->dim(0) == 1 || c->dim(0) == N;
    if (!ok)
      return kernelError(ctx, strCat("C ", c->describe(), " does not broadcast to [", M, ",", N,
                                     "] (A ", a.describe(), ", B ", b.describe(), ")"));
  }
  if (!fitsBlas(M) || !fitsBlas(N) || !fitsBlas(K))
    return kernelError(ctx, "matrix dimensions exceed the BLAS int range");
  p = GemmPlan{ta, tb, alpha, beta, M, N, K};
  return llvm::Error::success();
}

namespace {

llvm::Error gemmKernel(KernelContext &ctx) {
  GemmPlan p;
  if (auto e = planGemm(ctx, p))
    return e;
  const Tensor &a = *input(ctx, 0), &b = *input(ctx, 1);
  const Tensor *c = input(ctx, 2);
  DType dt = a.dtype();
  const bool ta = p.transA, tb = p.transB;
  const float alpha = p.alpha, beta = p.beta;
  const int64_t M = p.M, N = p.N, K = p.K;
  Tensor y = Tensor::empty(dt, {M, N});
  if (dt == DType::Float) {
    runGemm<float>(ta, tb, M, N, K, alpha, beta, a.data<float>(), b.data<float>(), c,
                   y.data<float>());
  } else if (dt == DType::Double) {
    runGemm<double>(ta, tb, M, N, K, alpha, beta, a.data<double>(), b.data<double>(), c,
                    y.data<double>());
  } else {
    Tensor af = toFloat32(a), bf = toFloat32(b), cf;
    if (c)
      cf = toFloat32(*c);
    Tensor yf = Tensor::empty(DType::Float, {M, N});
    runGemm<float>(ta, tb, M, N, K, alpha, beta, af.data<float>(), bf.data<float>(),
                   c ? &cf : nullptr, yf.data<float>());
    y = fromFloat32(yf, dt);
  }
  ctx.outputs[0] = std::move(y);
  return llvm::Error::success();
}

} // namespace

void registerMatMulKernels(KernelRegistry &reg) {
  reg.add("", "MatMul", matMulKernel);
  reg.add("", "Gemm", gemmKernel);
}

} // namespace qn::rt::cpu
