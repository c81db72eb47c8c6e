//===- CudaFused.cu - One kernel for a chain of elementwise nodes ---------===//
//
// Each thread evaluates the program (FuseProgram.h: the same evalFused the
// host reference runs) for its elements: inputs are loaded through their
// broadcast strides, intermediates stay in registers, one store.
//
//===----------------------------------------------------------------------===//
#include "CudaFused.h"
#include "CudaIndex.cuh"

namespace qn::rt::cuda {
namespace {

struct FusedArgs {
  FuseProgram prog;
  const void *in[kFuseMaxInputs];
  Dims dims;
  Strides st[kFuseMaxInputs];
  bool contiguous[kFuseMaxInputs]; // reads element i itself
  int64_t n;
};

template <class T> __global__ void fusedKernel(T *out, const FusedArgs a) {
  float v[kFuseMaxInputs];
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < a.n;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t off[kFuseMaxInputs];
    for (int j = 0; j < a.prog.numInputs; ++j)
      off[j] = 0;
    int64_t rem = i;
    for (int k = a.dims.rank - 1; k >= 0; --k) {
      int64_t q = rem / a.dims.d[k];
      int64_t idx = rem - q * a.dims.d[k];
      rem = q;
      for (int j = 0; j < a.prog.numInputs; ++j)
        off[j] += idx * a.st[j].s[k];
    }
    for (int j = 0; j < a.prog.numInputs; ++j)
      v[j] = toF(static_cast<const T *>(a.in[j])[a.contiguous[j] ? i : off[j]]);
    out[i] = fromF<T>(evalFused(a.prog, v));
  }
}

} // namespace

bool launchFused(const FuseProgram &prog, const void *const *inputs, const int64_t *strides,
                 const int64_t *dims, int rank, void *out, int32_t dtype, cudaStream_t stream,
                 cudaError_t &err) {
  err = cudaSuccess;
  if (rank > kMaxDims || prog.numInputs > kFuseMaxInputs)
    return false;
  FusedArgs a;
  a.prog = prog;
  a.dims.rank = rank;
  a.n = 1;
  for (int k = 0; k < rank; ++k) {
    a.dims.d[k] = dims[k];
    a.n *= dims[k];
  }
  for (int j = 0; j < prog.numInputs; ++j) {
    a.in[j] = inputs[j];
    int64_t expect = 1;
    bool contiguous = true;
    for (int k = rank - 1; k >= 0; --k) {
      a.st[j].s[k] = strides[j * rank + k];
      if (dims[k] != 1 && a.st[j].s[k] != expect)
        contiguous = false;
      expect *= dims[k];
    }
    a.contiguous[j] = contiguous;
  }
  if (a.n == 0)
    return dtype == DT_F32 || dtype == DT_F16 || dtype == DT_BF16;
  unsigned blocks = blocksFor(a.n);
  switch (dtype) {
  case DT_F32: fusedKernel<float><<<blocks, 256, 0, stream>>>(static_cast<float *>(out), a); break;
  case DT_F16: fusedKernel<__half><<<blocks, 256, 0, stream>>>(static_cast<__half *>(out), a); break;
  case DT_BF16:
    fusedKernel<__nv_bfloat16><<<blocks, 256, 0, stream>>>(static_cast<__nv_bfloat16 *>(out), a);
    break;
  default: return false;
  }
  err = cudaGetLastError();
  return true;
}

} // namespace qn::rt::cuda
