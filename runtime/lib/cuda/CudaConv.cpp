//===- CudaConv.cpp - Conv through im2col + cuBLAS -------------------------===//
//
// Same semantics as runtime/lib/cpu/CpuConv.cpp, whose planner (cpu::planConv)
// both devices run: one set of checks and error messages. The column matrix
// of all N images, col[N, C*prod(k), P], is built by one im2col kernel
// (CudaConv.cu; a 1x1 kernel with stride 1 and no pads reads X directly), then
// Y[n, g] [Mg, P] = W_g [Mg, K] col[n, g] [K, P] on cuBLAS (the row-major GEMM
// of CudaMatMul.cpp): one strided-batched GEMM over the images when group = 1
// (W's stride 0), else one per image, batched over the groups. A bias is
// broadcast into Y first and the GEMM accumulates (beta = 1).
//
//===----------------------------------------------------------------------===//
#include "CudaConv.h"
#include "CudaDevice.h"

#include "../OpSemantics.h"

namespace qn::rt::cuda {
namespace {

using cpu::input;

llvm::Error convKernel(KernelContext &ctx) {
  cpu::ConvPlan p;
  if (auto e = cpu::planConv(ctx, p))
    return e;
  const Tensor &x = *input(ctx, 0), &w = *input(ctx, 1);
  const Tensor *b = input(ctx, 2);
  const DType dt = x.dtype();
  const int32_t dtNum = static_cast<int32_t>(dt);
  DeviceContext &dc = cudaDev(ctx);
  if (p.N == 0 || p.M == 0 || p.P == 0) {
    ctx.outputs[0] = dc.alloc(dt, p.outShape);
    return llvm::Error::success();
  }
  if (p.K == 0) { // no input channels: Y = B, or 0
    if (!b) {
      ctx.outputs[0] = dc.zeros(dt, p.outShape);
      return checkLaunch(ctx);
    }
    Tensor y = dc.alloc(dt, p.outShape);
    if (cudaError_t e = launchConvBias(dtNum, b->raw(), y.raw(), p.N, p.M, p.P, dc.stream))
      return cudaError(ctx, e, "Conv bias");
    ctx.outputs[0] = std::move(y);
    return checkLaunch(ctx);
  }

  Tensor colBuf;
  const void *col = x.raw();
  if (!p.pointwise) {
    colBuf = dc.alloc(dt, {p.N, p.G * p.K, p.P});
    ConvGeometry g;
    g.N = p.N;
    g.C = p.C;
    for (int d = 0; d < 3; ++d) {
      g.in[d] = p.in[d];
      g.k[d] = p.k[d];
      g.out[d] = p.out[d];
      g.stride[d] = p.stride[d];
      g.dil[d] = p.dil[d];
      g.pad[d] = p.padBegin[d];
    }
    if (cudaError_t e = launchConvIm2col(dtNum, g, x.raw(), colBuf.raw(), dc.stream))
      return cudaError(ctx, e, "Conv im2col");
    col = colBuf.raw();
  }
  Tensor y = dc.alloc(dt, p.outShape);
  if (b)
    if (cudaError_t e = launchConvBias(dtNum, b->raw(), y.raw(), p.N, p.M, p.P, dc.stream))
      return cudaError(ctx, e, "Conv bias");
  if (auto e = prepareCublas(ctx))
    return e;
  RowGemm gm;
  gm.M = p.Mg;
  gm.N = p.P;
  gm.K = p.K;
  gm.lda = p.K;
  gm.ldb = p.P;
  gm.ldy = p.P;
  const double beta = b ? 1.0 : 0.0;
  const int64_t es = static_cast<int64_t>(dtypeSize(dt));
  const int64_t colPerImage = p.G * p.K * p.P, yPerImage = p.M * p.P;
  if (p.G == 1) {
    gm.strideA = 0;
    gm.strideB = colPerImage;
    gm.strideY = yPerImage;
    gm.batch = p.N;
    if (auto e = rowMajorGemm(ctx, dt, gm, 1.0, beta, w.raw(), col, y.raw()))
      return e;
  } else {
    gm.strideA = p.Mg * p.K;
    gm.strideB = p.K * p.P;
    gm.strideY = p.Mg * p.P;
    gm.batch = p.G;
    for (int64_t n = 0; n < p.N; ++n) {
      const void *cn = static_cast<const char *>(col) + n * colPerImage * es;
      void *yn = static_cast<char *>(y.raw()) + n * yPerImage * es;
      if (auto e = rowMajorGemm(ctx, dt, gm, 1.0, beta, w.raw(), cn, yn))
        return e;
    }
  }
  ctx.outputs[0] = std::move(y);
  return checkLaunch(ctx);
}

} // namespace

void registerCudaConvKernels(KernelRegistry &reg) { reg.add("", "Conv", convKernel); }

} // namespace qn::rt::cuda
