//===- CudaNorm.cu - LayerNormalization, Softmax, reductions on CUDA ------===//
//
// Row kernels (LayerNormalization, Softmax/LogSoftmax along the last axis):
// one warp per row for short rows (several rows per block), one block per row
// otherwise; the row is held in registers (16-byte vector loads when the row
// and the pointers are aligned), so that the two-pass statistics read global
// memory once. Rows too long for registers loop over global memory (L2). The
// reductions combine warp shuffles and, across the warps of a block, shared
// memory. CumSum scans each line along its axis in one thread (the lines,
// [outer, inner], across threads: neighbouring threads read neighbouring
// elements when inner > 1).
//
// Accumulation: float for float32/float16/bfloat16, double for float64 (row
// kernels); the Reduce ops sum floating types in double and integers in
// wrapping 64-bit, as the CPU kernels do.
//
//===----------------------------------------------------------------------===//
#include "CudaNorm.h"

#include "CudaFused.h"
#include "CudaIndex.cuh"

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace qn::rt::cuda {
namespace {

//===----------------------------------------------------------------------===//
// Shared device helpers
//===----------------------------------------------------------------------===//

template <class T>
constexpr bool kIsHalf = std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>;

/// Element -> accumulator type A (float or double; integers for Reduce).
template <class A, class T> __device__ __forceinline__ A toAcc(T v) {
  if constexpr (kIsHalf<T>)
    return static_cast<A>(toF(v));
  else
    return static_cast<A>(v);
}
/// Accumulator -> element (half types round from float, as the CPU does).
template <class T, class A> __device__ __forceinline__ T fromAcc(A v) {
  if constexpr (kIsHalf<T>)
    return fromF<T>(static_cast<float>(v));
  else
    return static_cast<T>(v);
}

__device__ __forceinline__ float expA(float v) { return expf(v); }
__device__ __forceinline__ double expA(double v) { return exp(v); }
__device__ __forceinline__ float logA(float v) { return logf(v); }
__device__ __forceinline__ double logA(double v) { return log(v); }
__device__ __forceinline__ float sqrtA(float v) { return sqrtf(v); }
__device__ __forceinline__ double sqrtA(double v) { return sqrt(v); }
template <class A> __device__ __forceinline__ A negInf() { return -static_cast<A>(INFINITY); }

/// N elements loaded / stored as one 16-byte (or smaller) access.
template <class T, int N> struct alignas(sizeof(T) * N) Vec { T v[N]; };

inline bool aligned16(const void *p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

struct SumOp {
  template <class A> __device__ __forceinline__ A operator()(A a, A b) const { return a + b; }
};
/// max as the CPU's softmax computes it: `b > a ? b : a` (NaN never wins).
struct MaxOp {
  template <class A> __device__ __forceinline__ A operator()(A a, A b) const {
    return b > a ? b : a;
  }
};

/// Reduction over a group of threads: one warp (Block = false) or the whole
/// block (Block = true; blockDim.x a multiple of 32). Every thread of the group
/// gets the result; every thread of the group must call it. `smem`: 32 slots.
template <bool Block, class A, class Op>
__device__ __forceinline__ A groupReduce(A v, Op op, A identity, A *smem) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  if constexpr (Block) {
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads(); // a previous call may still be reading smem
    if (lane == 0)
      smem[w] = v;
    __syncthreads();
    v = lane < nw ? smem[lane] : identity;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
      v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  }
  return v;
}

/// The rows a thread's group works on: rows first, first + stride, ...; lane
/// in [0, lanes) within the group.
struct RowGroup {
  int64_t first, stride;
  int lane, lanes;
};
template <bool Block> __device__ __forceinline__ RowGroup rowGroup() {
  if constexpr (Block) {
    return {static_cast<int64_t>(blockIdx.x), static_cast<int64_t>(gridDim.x),
            static_cast<int>(threadIdx.x), static_cast<int>(blockDim.x)};
  } else {
    const int per = blockDim.x >> 5;
    return {static_cast<int64_t>(blockIdx.x) * per + (threadIdx.x >> 5),
            static_cast<int64_t>(gridDim.x) * per, static_cast<int>(threadIdx.x & 31), 32};
  }
}

constexpr int kWarpRowThreads = 128; // 4 rows per block in warp-per-row mode
constexpr int kMaxRowThreads = 512;  // block-per-row mode, cached kernels
constexpr int kLoopThreads = 512;    // block-per-row mode, rows read from global memory
constexpr int64_t kMaxGrid = 65535LL * 32;

inline unsigned gridFor(int64_t groups, int perBlock) {
  int64_t b = (groups + perBlock - 1) / perBlock;
  if (b < 1)
    b = 1;
  if (b > kMaxGrid)
    b = kMaxGrid;
  return static_cast<unsigned>(b);
}
inline int roundUp32(int64_t n) { return static_cast<int>((n + 31) / 32 * 32); }

/// How a row kernel is launched: warp per row (threads = kWarpRowThreads),
/// block per row with `threads` (cached), or the global-memory loop.
enum class RowMode { Warp, Block, Loop };
struct RowPlan {
  RowMode mode;
  int threads;
  unsigned grid;
};
/// nvec vectors per row, `items` vectors per thread in registers.
inline RowPlan planRows(int64_t rows, int64_t nvec, int items) {
  if (nvec > 0 && nvec <= 32 * items)
    return {RowMode::Warp, kWarpRowThreads, gridFor(rows, kWarpRowThreads / 32)};
  if (nvec > 0 && nvec <= static_cast<int64_t>(kMaxRowThreads) * items) {
    int t = roundUp32((nvec + items - 1) / items);
    if (t < 64)
      t = 64;
    return {RowMode::Block, t, gridFor(rows, 1)};
  }
  return {RowMode::Loop, kLoopThreads, gridFor(rows, 1)};
}

//===----------------------------------------------------------------------===//
// Strided gather, fill
//===----------------------------------------------------------------------===//

template <class E>
__global__ void gatherKernel(const E *__restrict__ in, E *__restrict__ out, int64_t n, Dims d,
                             Strides s) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = in[stridedOffset(i, d, s)];
}

template <class E> __global__ void fillKernel(E *__restrict__ out, int64_t n, E v) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = v;
}

//===----------------------------------------------------------------------===//
// LayerNormalization
//===----------------------------------------------------------------------===//

/// Rows of cols = nvec * VEC elements held in registers: nvec <= lanes * ITEMS.
template <class T, int VEC, int ITEMS, bool BLOCK>
__global__ void __launch_bounds__(kMaxRowThreads)
    layerNormCached(const T *__restrict__ x, const T *__restrict__ scale,
                    const T *__restrict__ bias, T *__restrict__ y, float *__restrict__ mean,
                    float *__restrict__ inv, int64_t rows, int64_t cols, float eps) {
  using A = typename Acc<T>::type;
  using V = Vec<T, VEC>;
  __shared__ A smem[32];
  const RowGroup g = rowGroup<BLOCK>();
  const int64_t nvec = cols / VEC;
  const V *sv = reinterpret_cast<const V *>(scale);
  const V *bv = reinterpret_cast<const V *>(bias);
  for (int64_t r = g.first; r < rows; r += g.stride) {
    const V *xr = reinterpret_cast<const V *>(x + r * cols);
    A v[ITEMS][VEC];
    A s = A(0);
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int64_t i = g.lane + static_cast<int64_t>(k) * g.lanes;
      if (i < nvec) {
        const V p = xr[i];
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          v[k][j] = toAcc<A>(p.v[j]);
          s += v[k][j];
        }
      } else {
#pragma unroll
        for (int j = 0; j < VEC; ++j)
          v[k][j] = A(0);
      }
    }
    s = groupReduce<BLOCK>(s, SumOp(), A(0), smem);
    const A m = s / static_cast<A>(cols);
    A q = A(0);
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int64_t i = g.lane + static_cast<int64_t>(k) * g.lanes;
      if (i < nvec) {
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const A d = v[k][j] - m;
          q += d * d;
        }
      }
    }
    q = groupReduce<BLOCK>(q, SumOp(), A(0), smem);
    const A is = A(1) / sqrtA(q / static_cast<A>(cols) + static_cast<A>(eps));
    V *yr = reinterpret_cast<V *>(y + r * cols);
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int64_t i = g.lane + static_cast<int64_t>(k) * g.lanes;
      if (i < nvec) {
        V o;
        V sc, bi;
        if (sv)
          sc = sv[i];
        if (bv)
          bi = bv[i];
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          A t = (v[k][j] - m) * is;
          if (sv)
            t *= toAcc<A>(sc.v[j]);
          if (bv)
            t += toAcc<A>(bi.v[j]);
          o.v[j] = fromAcc<T>(t);
        }
        yr[i] = o;
      }
    }
    if (g.lane == 0) {
      if (mean)
        mean[r] = static_cast<float>(m);
      if (inv)
        inv[r] = static_cast<float>(is);
    }
  }
}

/// Any row length (cols may be 0): three passes over global memory.
template <class T>
__global__ void __launch_bounds__(kLoopThreads)
    layerNormLoop(const T *__restrict__ x, const T *__restrict__ scale, const T *__restrict__ bias,
                  T *__restrict__ y, float *__restrict__ mean, float *__restrict__ inv,
                  int64_t rows, int64_t cols, float eps) {
  using A = typename Acc<T>::type;
  __shared__ A smem[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *xr = x + r * cols;
    A s = A(0);
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
      s += toAcc<A>(xr[c]);
    s = groupReduce<true>(s, SumOp(), A(0), smem);
    const A m = cols ? s / static_cast<A>(cols) : A(0);
    A q = A(0);
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      const A d = toAcc<A>(xr[c]) - m;
      q += d * d;
    }
    q = groupReduce<true>(q, SumOp(), A(0), smem);
    const A var = cols ? q / static_cast<A>(cols) : A(0);
    const A is = A(1) / sqrtA(var + static_cast<A>(eps));
    T *yr = y + r * cols;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      A t = (toAcc<A>(xr[c]) - m) * is;
      if (scale)
        t *= toAcc<A>(scale[c]);
      if (bias)
        t += toAcc<A>(bias[c]);
      yr[c] = fromAcc<T>(t);
    }
    if (threadIdx.x == 0) {
      if (mean)
        mean[r] = static_cast<float>(m);
      if (inv)
        inv[r] = static_cast<float>(is);
    }
  }
}

template <class T, int VEC, int ITEMS>
void launchLayerNormCached(const RowPlan &p, const T *x, const T *scale, const T *bias, T *y,
                           float *mean, float *inv, int64_t rows, int64_t cols, float eps,
                           cudaStream_t stream) {
  if (p.mode == RowMode::Warp)
    layerNormCached<T, VEC, ITEMS, false>
        <<<p.grid, p.threads, 0, stream>>>(x, scale, bias, y, mean, inv, rows, cols, eps);
  else
    layerNormCached<T, VEC, ITEMS, true>
        <<<p.grid, p.threads, 0, stream>>>(x, scale, bias, y, mean, inv, rows, cols, eps);
}

template <class T>
void layerNormT(const T *x, const T *scale, const T *bias, T *y, float *mean, float *inv,
                int64_t rows, int64_t cols, float eps, cudaStream_t stream) {
  constexpr int VEC = 16 / sizeof(T);
  constexpr int kItemsVec = 4, kItemsScalar = 8;
  const bool vec = cols % VEC == 0 && aligned16(x) && aligned16(y) &&
                   (!scale || aligned16(scale)) && (!bias || aligned16(bias));
  RowPlan p = vec ? planRows(rows, cols / VEC, kItemsVec) : planRows(rows, cols, kItemsScalar);
  if (p.mode == RowMode::Loop)
    layerNormLoop<T>
        <<<p.grid, p.threads, 0, stream>>>(x, scale, bias, y, mean, inv, rows, cols, eps);
  else if (vec)
    launchLayerNormCached<T, VEC, kItemsVec>(p, x, scale, bias, y, mean, inv, rows, cols, eps,
                                             stream);
  else
    launchLayerNormCached<T, 1, kItemsScalar>(p, x, scale, bias, y, mean, inv, rows, cols, eps,
                                              stream);
}

//===----------------------------------------------------------------------===//
// LayerNormalization of a fused elementwise program's output
//===----------------------------------------------------------------------===//

struct FusedNormArgs {
  FuseProgram prog;
  const void *in[kFuseMaxInputs];
  Dims outer;                          // dims[0..rank-1): the rows
  Strides st[kFuseMaxInputs];          // the inputs' strides along those
  int64_t colStride[kFuseMaxInputs];   // and along the last axis
  int64_t rows, cols;
  float eps;
};

/// As layerNormCached (VEC 1): each element of a row is the program over the
/// inputs, rounded to T (what the unfused group would have stored), stored to
/// x when x is given, kept in registers for the two-pass statistics.
template <class T, int ITEMS, bool BLOCK>
__global__ void __launch_bounds__(kMaxRowThreads)
    fusedLayerNormKernel(const FusedNormArgs a, T *__restrict__ x, const T *__restrict__ scale,
                         const T *__restrict__ bias, T *__restrict__ y) {
  __shared__ float smem[32];
  const RowGroup g = rowGroup<BLOCK>();
  const int64_t cols = a.cols;
  const int ni = a.prog.numInputs;
  for (int64_t r = g.first; r < a.rows; r += g.stride) {
    int64_t base[kFuseMaxInputs];
    for (int j = 0; j < ni; ++j)
      base[j] = 0;
    int64_t rem = r;
    for (int k = a.outer.rank - 1; k >= 0; --k) {
      const int64_t q = rem / a.outer.d[k];
      const int64_t idx = rem - q * a.outer.d[k];
      rem = q;
      for (int j = 0; j < ni; ++j)
        base[j] += idx * a.st[j].s[k];
    }
    float v[ITEMS];
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int64_t c = g.lane + static_cast<int64_t>(k) * g.lanes;
      if (c < cols) {
        float in[kFuseMaxInputs];
        for (int j = 0; j < ni; ++j)
          in[j] = toF(static_cast<const T *>(a.in[j])[base[j] + c * a.colStride[j]]);
        const T xt = fromF<T>(evalFused(a.prog, in));
        if (x)
          x[r * cols + c] = xt;
        v[k] = toF(xt);
        s += v[k];
      } else {
        v[k] = 0.f;
      }
    }
    s = groupReduce<BLOCK>(s, SumOp(), 0.f, smem);
    const float m = s / static_cast<float>(cols);
    float q = 0.f;
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int64_t c = g.lane + static_cast<int64_t>(k) * g.lanes;
      if (c < cols) {
        const float d = v[k] - m;
        q += d * d;
      }
    }
    q = groupReduce<BLOCK>(q, SumOp(), 0.f, smem);
    const float is = 1.f / sqrtf(q / static_cast<float>(cols) + a.eps);
    T *yr = y + r * cols;
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int64_t c = g.lane + static_cast<int64_t>(k) * g.lanes;
      if (c < cols) {
        float t = (v[k] - m) * is;
        if (scale)
          t *= toF(scale[c]);
        if (bias)
          t += toF(bias[c]);
        yr[c] = fromF<T>(t);
      }
    }
  }
}

template <class T>
void fusedLayerNormT(const FusedNormArgs &a, const RowPlan &p, T *x, const T *scale,
                     const T *bias, T *y, cudaStream_t stream) {
  constexpr int kItems = 8;
  if (p.mode == RowMode::Warp)
    fusedLayerNormKernel<T, kItems, false><<<p.grid, p.threads, 0, stream>>>(a, x, scale, bias, y);
  else
    fusedLayerNormKernel<T, kItems, true><<<p.grid, p.threads, 0, stream>>>(a, x, scale, bias, y);
}

//===----------------------------------------------------------------------===//
// Softmax / LogSoftmax
//===----------------------------------------------------------------------===//

/// Along the last axis, rows of n = nvec * VEC elements held in registers.
template <class T, int VEC, int ITEMS, bool BLOCK, bool LOG>
__global__ void __launch_bounds__(kMaxRowThreads)
    softmaxCached(const T *__restrict__ x, T *__restrict__ y, int64_t rows, int64_t n) {
  using A = typename Acc<T>::type;
  using V = Vec<T, VEC>;
  __shared__ A smem[32];
  const RowGroup g = rowGroup<BLOCK>();
  const int64_t nvec = n / VEC;
  for (int64_t r = g.first; r < rows; r += g.stride) {
    const V *xr = reinterpret_cast<const V *>(x + r * n);
    A v[ITEMS][VEC];
    A mx = negInf<A>();
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int64_t i = g.lane + static_cast<int64_t>(k) * g.lanes;
      if (i < nvec) {
        const V p = xr[i];
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          v[k][j] = toAcc<A>(p.v[j]);
          mx = v[k][j] > mx ? v[k][j] : mx;
        }
      } else {
#pragma unroll
        for (int j = 0; j < VEC; ++j)
          v[k][j] = A(0);
      }
    }
    mx = groupReduce<BLOCK>(mx, MaxOp(), negInf<A>(), smem);
    if (mx == negInf<A>())
      mx = A(0); // all -inf: avoid inf - inf
    A s = A(0);
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int64_t i = g.lane + static_cast<int64_t>(k) * g.lanes;
      if (i < nvec) {
#pragma unroll
        for (int j = 0; j < VEC; ++j) {
          const A e = expA(v[k][j] - mx);
          if constexpr (!LOG)
            v[k][j] = e;
          s += e;
        }
      }
    }
    s = groupReduce<BLOCK>(s, SumOp(), A(0), smem);
    const A f = LOG ? logA(s) : A(1) / s;
    V *yr = reinterpret_cast<V *>(y + r * n);
#pragma unroll
    for (int k = 0; k < ITEMS; ++k) {
      const int64_t i = g.lane + static_cast<int64_t>(k) * g.lanes;
      if (i < nvec) {
        V o;
#pragma unroll
        for (int j = 0; j < VEC; ++j)
          o.v[j] = fromAcc<T>(LOG ? v[k][j] - mx - f : v[k][j] * f);
        yr[i] = o;
      }
    }
  }
}

/// Along the last axis, any row length: three passes over global memory.
template <class T, bool LOG>
__global__ void __launch_bounds__(kLoopThreads)
    softmaxLoop(const T *__restrict__ x, T *__restrict__ y, int64_t rows, int64_t n) {
  using A = typename Acc<T>::type;
  __shared__ A smem[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T *xr = x + r * n;
    T *yr = y + r * n;
    A mx = negInf<A>();
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const A v = toAcc<A>(xr[i]);
      mx = v > mx ? v : mx;
    }
    mx = groupReduce<true>(mx, MaxOp(), negInf<A>(), smem);
    if (mx == negInf<A>())
      mx = A(0);
    A s = A(0);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
      s += expA(toAcc<A>(xr[i]) - mx);
    s = groupReduce<true>(s, SumOp(), A(0), smem);
    const A f = LOG ? logA(s) : A(1) / s;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const A v = toAcc<A>(xr[i]);
      yr[i] = fromAcc<T>(LOG ? v - mx - f : expA(v - mx) * f);
    }
  }
}

/// Along an inner axis (inner > 1): a thread per (outer, inner) column, the
/// threads of a warp on consecutive inner positions (coalesced).
template <class T, bool LOG>
__global__ void softmaxStrided(const T *__restrict__ x, T *__restrict__ y, int64_t outer, int64_t n,
                               int64_t inner) {
  using A = typename Acc<T>::type;
  const int64_t cols = outer * inner;
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < cols;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = q / inner, j = q - o * inner;
    const T *xb = x + o * n * inner + j;
    T *yb = y + o * n * inner + j;
    A mx = negInf<A>();
    for (int64_t i = 0; i < n; ++i) {
      const A v = toAcc<A>(xb[i * inner]);
      mx = v > mx ? v : mx;
    }
    if (mx == negInf<A>())
      mx = A(0);
    A s = A(0);
    for (int64_t i = 0; i < n; ++i)
      s += expA(toAcc<A>(xb[i * inner]) - mx);
    const A f = LOG ? logA(s) : A(1) / s;
    for (int64_t i = 0; i < n; ++i) {
      const A v = toAcc<A>(xb[i * inner]);
      yb[i * inner] = fromAcc<T>(LOG ? v - mx - f : expA(v - mx) * f);
    }
  }
}

template <class T, int VEC, int ITEMS, bool LOG>
void launchSoftmaxCached(const RowPlan &p, const T *x, T *y, int64_t rows, int64_t n,
                         cudaStream_t stream) {
  if (p.mode == RowMode::Warp)
    softmaxCached<T, VEC, ITEMS, false, LOG><<<p.grid, p.threads, 0, stream>>>(x, y, rows, n);
  else
    softmaxCached<T, VEC, ITEMS, true, LOG><<<p.grid, p.threads, 0, stream>>>(x, y, rows, n);
}

template <class T, bool LOG>
void softmaxT(const T *x, T *y, int64_t outer, int64_t n, int64_t inner, cudaStream_t stream) {
  if (inner > 1) {
    const int threads = 256;
    softmaxStrided<T, LOG>
        <<<blocksFor(outer * inner, threads), threads, 0, stream>>>(x, y, outer, n, inner);
    return;
  }
  constexpr int VEC = 16 / sizeof(T);
  constexpr int kItemsVec = 4, kItemsScalar = 8;
  const bool vec = n % VEC == 0 && aligned16(x) && aligned16(y);
  RowPlan p = vec ? planRows(outer, n / VEC, kItemsVec) : planRows(outer, n, kItemsScalar);
  if (p.mode == RowMode::Loop)
    softmaxLoop<T, LOG><<<p.grid, p.threads, 0, stream>>>(x, y, outer, n);
  else if (vec)
    launchSoftmaxCached<T, VEC, kItemsVec, LOG>(p, x, y, outer, n, stream);
  else
    launchSoftmaxCached<T, 1, kItemsScalar, LOG>(p, x, y, outer, n, stream);
}

//===----------------------------------------------------------------------===//
// ReduceMean / ReduceSum / ReduceMax
//===----------------------------------------------------------------------===//

constexpr int kMean = 0, kSum = 1, kMax = 2;

template <class T>
constexpr bool kIsFloat = kIsHalf<T> || std::is_same_v<T, float> || std::is_same_v<T, double>;

/// Accumulator of element type T for reduction K: Max compares in T (float
/// for the half types); sums run in double (floating types) or wrapping
/// unsigned 64-bit (integers).
template <class T, int K> struct RedAcc {
  using type = std::conditional_t<K == kMax, std::conditional_t<kIsHalf<T>, float, T>,
                                  std::conditional_t<kIsFloat<T>, double, unsigned long long>>;
};

template <class T, int K> struct Red {
  using A = typename RedAcc<T, K>::type;
  __device__ __forceinline__ static A identity() {
    if constexpr (K == kMax) {
      if constexpr (std::is_floating_point_v<A>)
        return negInf<A>();
      else
        return std::numeric_limits<A>::lowest();
    } else {
      return A(0);
    }
  }
  __device__ __forceinline__ static A load(T v) {
    if constexpr (K != kMax && !kIsFloat<T>)
      return static_cast<A>(static_cast<int64_t>(v));
    else
      return toAcc<A>(v);
  }
  /// NaN wins for Max (the CPU returns the first NaN it meets).
  __device__ __forceinline__ A operator()(A a, A b) const {
    if constexpr (K == kMax) {
      if constexpr (std::is_floating_point_v<A>) {
        if (a != a)
          return a;
        if (b != b)
          return b;
      }
      return b > a ? b : a;
    } else {
      return a + b;
    }
  }
  __device__ __forceinline__ static T finish(A a, int64_t total) {
    if constexpr (K == kMax) {
      return fromAcc<T>(a);
    } else if constexpr (kIsFloat<T>) {
      return fromAcc<T>(K == kMean ? a / static_cast<double>(total) : a);
    } else {
      const int64_t v = static_cast<int64_t>(a);
      return static_cast<T>(K == kMean ? v / total : v);
    }
  }
};

/// Inputs of the first pass are elements (In = T), of the second partial
/// accumulators (In = A).
template <class T, int K, class In> __device__ __forceinline__ auto loadIn(In v) {
  if constexpr (std::is_same_v<In, T>)
    return Red<T, K>::load(v);
  else
    return v;
}

/// inner == 1: group p in [0, outer * splits) reduces x[m, s*chunk ..
/// min(len, (s+1)*chunk)) with m = p / splits, s = p % splits. FINAL (splits
/// == 1): y[m] = finish(acc); otherwise partial[p] = acc.
template <class In, class T, int K, bool BLOCK, bool FINAL>
__global__ void __launch_bounds__(256)
    reduceRowsKernel(const In *__restrict__ x, void *__restrict__ out, int64_t groups, int64_t len,
                     int64_t splits, int64_t chunk, int64_t total) {
  using R = Red<T, K>;
  using A = typename R::A;
  __shared__ A smem[32];
  const R op;
  const RowGroup g = rowGroup<BLOCK>();
  for (int64_t p = g.first; p < groups; p += g.stride) {
    const int64_t m = p / splits, s = p - m * splits;
    const int64_t b = s * chunk;
    const int64_t e = b + chunk < len ? b + chunk : len;
    const In *xr = x + m * len;
    A acc = R::identity();
#pragma unroll 4
    for (int64_t i = b + g.lane; i < e; i += g.lanes)
      acc = op(acc, loadIn<T, K>(xr[i]));
    acc = groupReduce<BLOCK>(acc, op, R::identity(), smem);
    if (g.lane == 0) {
      if constexpr (FINAL)
        static_cast<T *>(out)[p] = R::finish(acc, total);
      else
        static_cast<A *>(out)[p] = acc;
    }
  }
}

/// inner > 1: thread q in [0, outer * splits * inner) = (o, s, j) reduces
/// x[o, s*chunk .. , j] (threads of a warp on consecutive j). FINAL: y[o, j];
/// otherwise partial[o, s, j].
template <class In, class T, int K, bool FINAL>
__global__ void reduceColsKernel(const In *__restrict__ x, void *__restrict__ out, int64_t outer,
                                 int64_t len, int64_t inner, int64_t splits, int64_t chunk,
                                 int64_t total) {
  using R = Red<T, K>;
  using A = typename R::A;
  const R op;
  const int64_t count = outer * splits * inner;
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < count;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t t = q / inner, j = q - t * inner;
    const int64_t o = t / splits, s = t - o * splits;
    const int64_t b = s * chunk;
    const int64_t e = b + chunk < len ? b + chunk : len;
    const In *xc = x + o * len * inner + j;
    A acc = R::identity();
#pragma unroll 4
    for (int64_t i = b; i < e; ++i)
      acc = op(acc, loadIn<T, K>(xc[i * inner]));
    if constexpr (FINAL)
      static_cast<T *>(out)[q] = R::finish(acc, total);
    else
      static_cast<A *>(out)[q] = acc;
  }
}

constexpr int kReduceThreads = 256;
constexpr int64_t kRowChunk = 8192;    // elements per block when a long row is split
constexpr int64_t kRowTarget = 1024;   // blocks to aim for when splitting rows
constexpr int64_t kColChunk = 64;      // elements per thread when columns are split
constexpr int64_t kColTarget = 131072; // threads to aim for when splitting columns

template <class T, int K>
void reduceSplit(int64_t outer, int64_t len, int64_t inner, NormReduceSplit &sp) {
  using A = typename RedAcc<T, K>::type;
  sp = NormReduceSplit();
  int64_t splits = 1;
  if (inner == 1) {
    if (len >= 2 * kRowChunk && outer < kRowTarget / 4) {
      int64_t byLen = (len + kRowChunk - 1) / kRowChunk;
      int64_t byTarget = (kRowTarget + outer - 1) / outer;
      splits = byLen < byTarget ? byLen : byTarget;
    }
  } else {
    int64_t cols = outer * inner;
    if (len >= 4 * kColChunk && cols < kColTarget / 4) {
      int64_t byLen = (len + kColChunk - 1) / kColChunk;
      int64_t byTarget = (kColTarget + cols - 1) / cols;
      splits = byLen < byTarget ? byLen : byTarget;
    }
  }
  if (splits > 1) {
    int64_t chunk = (len + splits - 1) / splits;
    splits = (len + chunk - 1) / chunk;
    sp.splits = splits;
    sp.chunk = chunk;
    if (splits > 1)
      sp.workspaceBytes = static_cast<size_t>(outer * splits * inner) * sizeof(A);
    else
      sp.chunk = len;
  } else {
    sp.chunk = len;
  }
}

template <class T, int K>
void reduceLaunch(const T *x, T *y, void *ws, int64_t outer, int64_t len, int64_t inner,
                  const NormReduceSplit &sp, cudaStream_t stream) {
  using A = typename RedAcc<T, K>::type;
  const int64_t splits = sp.splits, chunk = sp.chunk;
  if (inner == 1) {
    if (splits == 1) {
      if (len >= 1024)
        reduceRowsKernel<T, T, K, true, true>
            <<<gridFor(outer, 1), kReduceThreads, 0, stream>>>(x, y, outer, len, 1, len, len);
      else
        reduceRowsKernel<T, T, K, false, true>
            <<<gridFor(outer, kReduceThreads / 32), kReduceThreads, 0, stream>>>(x, y, outer, len,
                                                                                 1, len, len);
      return;
    }
    reduceRowsKernel<T, T, K, true, false>
        <<<gridFor(outer * splits, 1), kReduceThreads, 0, stream>>>(x, ws, outer * splits, len,
                                                                    splits, chunk, len);
    reduceRowsKernel<A, T, K, true, true><<<gridFor(outer, 1), kReduceThreads, 0, stream>>>(
        static_cast<const A *>(ws), y, outer, splits, 1, splits, len);
    return;
  }
  if (splits == 1) {
    reduceColsKernel<T, T, K, true>
        <<<blocksFor(outer * inner, kReduceThreads), kReduceThreads, 0, stream>>>(
            x, y, outer, len, inner, 1, len, len);
    return;
  }
  reduceColsKernel<T, T, K, false>
      <<<blocksFor(outer * splits * inner, kReduceThreads), kReduceThreads, 0, stream>>>(
          x, ws, outer, len, inner, splits, chunk, len);
  reduceColsKernel<A, T, K, true>
      <<<blocksFor(outer * inner, kReduceThreads), kReduceThreads, 0, stream>>>(
          static_cast<const A *>(ws), y, outer, splits, inner, 1, splits, len);
}

/// Calls f(T{}) for the Reduce ops' dtypes.
template <class F> bool dispatchReduce(int32_t dtype, F &&f) {
  switch (dtype) {
  case DT_F32:
    f(float{});
    return true;
  case DT_F16:
    f(__half{});
    return true;
  case DT_BF16:
    f(__nv_bfloat16{});
    return true;
  case DT_F64:
    f(double{});
    return true;
  case DT_I64:
    f(int64_t{});
    return true;
  case DT_I32:
    f(int32_t{});
    return true;
  default:
    return false;
  }
}
template <class F> bool dispatchKind(int kind, F &&f) {
  switch (kind) {
  case kMean:
    f(std::integral_constant<int, kMean>{});
    return true;
  case kSum:
    f(std::integral_constant<int, kSum>{});
    return true;
  case kMax:
    f(std::integral_constant<int, kMax>{});
    return true;
  default:
    return false;
  }
}

//===----------------------------------------------------------------------===//
// CumSum
//===----------------------------------------------------------------------===//

/// The running sum's type: float for the half types, wrapping 64-bit for integers.
template <class T> struct CumAcc { using type = typename Acc<T>::type; };
template <> struct CumAcc<int32_t> { using type = uint64_t; };
template <> struct CumAcc<int64_t> { using type = uint64_t; };

/// One thread per line (o, c) of x viewed as [outer, n, inner].
template <class T>
__global__ void cumSumKernel(const T *__restrict__ x, T *__restrict__ y, int64_t lines,
                             int64_t n, int64_t inner, bool exclusive, bool reverse) {
  using A = typename CumAcc<T>::type;
  for (int64_t line = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; line < lines;
       line += (int64_t)gridDim.x * blockDim.x) {
    int64_t o = line / inner, c = line - o * inner;
    const int64_t base = o * n * inner + c;
    A s = 0;
    for (int64_t j = 0; j < n; ++j) {
      int64_t i = base + (reverse ? n - 1 - j : j) * inner;
      A v;
      if constexpr (std::is_integral_v<T>)
        v = static_cast<A>(static_cast<int64_t>(x[i]));
      else
        v = toAcc<A>(x[i]);
      if (!exclusive)
        s += v;
      y[i] = fromAcc<T>(s);
      if (exclusive)
        s += v;
    }
  }
}

} // namespace

//===----------------------------------------------------------------------===//
// Launchers
//===----------------------------------------------------------------------===//

cudaError_t launchNormGather(size_t elemSize, const void *in, void *out, int64_t n, int rank,
                             const int64_t *outDims, const int64_t *inStrides,
                             cudaStream_t stream) {
  if (rank < 0 || rank > kMaxDims || n <= 0)
    return cudaErrorInvalidValue;
  Dims d;
  Strides s;
  d.rank = rank;
  for (int k = 0; k < rank; ++k) {
    d.d[k] = outDims[k];
    s.s[k] = inStrides[k];
  }
  bool ok = dispatchBySize(elemSize, [&](auto tag) {
    using E = decltype(tag);
    gatherKernel<E><<<blocksFor(n), 256, 0, stream>>>(static_cast<const E *>(in),
                                                      static_cast<E *>(out), n, d, s);
  });
  if (!ok)
    return cudaErrorInvalidValue;
  return cudaGetLastError();
}

cudaError_t launchNormFill(size_t elemSize, void *out, int64_t n, uint64_t bits,
                           cudaStream_t stream) {
  if (n <= 0)
    return cudaErrorInvalidValue;
  bool ok = dispatchBySize(elemSize, [&](auto tag) {
    using E = decltype(tag);
    fillKernel<E><<<blocksFor(n), 256, 0, stream>>>(static_cast<E *>(out), n, static_cast<E>(bits));
  });
  if (!ok)
    return cudaErrorInvalidValue;
  return cudaGetLastError();
}

cudaError_t launchLayerNorm(int32_t dtype, const void *x, const void *scale, const void *bias,
                            void *y, float *mean, float *invStdDev, int64_t rows, int64_t cols,
                            float epsilon, cudaStream_t stream) {
  if (rows <= 0 || cols < 0)
    return cudaErrorInvalidValue;
  bool ok = dispatchFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    layerNormT<T>(static_cast<const T *>(x), static_cast<const T *>(scale),
                  static_cast<const T *>(bias), static_cast<T *>(y), mean, invStdDev, rows, cols,
                  epsilon, stream);
  });
  if (!ok)
    return cudaErrorInvalidValue;
  return cudaGetLastError();
}

bool launchFusedLayerNorm(const FuseProgram &prog, const void *const *inputs,
                          const int64_t *strides, const int64_t *dims, int rank, void *xOut,
                          const void *scale, const void *bias, void *y, float epsilon,
                          int32_t dtype, cudaStream_t stream, cudaError_t &err) {
  err = cudaSuccess;
  constexpr int kItems = 8; // fusedLayerNormT's
  static_assert(kFusedNormMaxCols <= static_cast<int64_t>(kMaxRowThreads) * kItems, "");
  if (rank < 1 || rank > kMaxDims || prog.numInputs > kFuseMaxInputs)
    return false;
  if (dtype != DT_F32 && dtype != DT_F16 && dtype != DT_BF16)
    return false;
  FusedNormArgs a;
  a.prog = prog;
  a.outer.rank = rank - 1;
  a.rows = 1;
  for (int k = 0; k < rank - 1; ++k) {
    a.outer.d[k] = dims[k];
    a.rows *= dims[k];
  }
  a.cols = dims[rank - 1];
  a.eps = epsilon;
  if (a.rows <= 0 || a.cols <= 0 || a.cols > kFusedNormMaxCols)
    return false;
  for (int j = 0; j < prog.numInputs; ++j) {
    a.in[j] = inputs[j];
    for (int k = 0; k < rank - 1; ++k)
      a.st[j].s[k] = strides[j * rank + k];
    a.colStride[j] = strides[j * rank + rank - 1];
  }
  const RowPlan p = planRows(a.rows, a.cols, kItems);
  if (p.mode == RowMode::Loop)
    return false;
  switch (dtype) {
  case DT_F32:
    fusedLayerNormT<float>(a, p, static_cast<float *>(xOut), static_cast<const float *>(scale),
                           static_cast<const float *>(bias), static_cast<float *>(y), stream);
    break;
  case DT_F16:
    fusedLayerNormT<__half>(a, p, static_cast<__half *>(xOut), static_cast<const __half *>(scale),
                            static_cast<const __half *>(bias), static_cast<__half *>(y), stream);
    break;
  default:
    fusedLayerNormT<__nv_bfloat16>(a, p, static_cast<__nv_bfloat16 *>(xOut),
                                   static_cast<const __nv_bfloat16 *>(scale),
                                   static_cast<const __nv_bfloat16 *>(bias),
                                   static_cast<__nv_bfloat16 *>(y), stream);
    break;
  }
  err = cudaGetLastError();
  return true;
}

cudaError_t launchSoftmax(int32_t dtype, bool logSoftmax, const void *x, void *y, int64_t outer,
                          int64_t n, int64_t inner, cudaStream_t stream) {
  if (outer <= 0 || n <= 0 || inner <= 0)
    return cudaErrorInvalidValue;
  bool ok = dispatchFloat(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (logSoftmax)
      softmaxT<T, true>(static_cast<const T *>(x), static_cast<T *>(y), outer, n, inner, stream);
    else
      softmaxT<T, false>(static_cast<const T *>(x), static_cast<T *>(y), outer, n, inner, stream);
  });
  if (!ok)
    return cudaErrorInvalidValue;
  return cudaGetLastError();
}

bool planNormReduce(int32_t dtype, int kind, int64_t outer, int64_t len, int64_t inner,
                    NormReduceSplit &split) {
  bool kindOk = false;
  bool ok = dispatchReduce(dtype, [&](auto tag) {
    using T = decltype(tag);
    kindOk = dispatchKind(
        kind, [&](auto k) { reduceSplit<T, decltype(k)::value>(outer, len, inner, split); });
  });
  return ok && kindOk;
}

cudaError_t launchReduce(int32_t dtype, int kind, const void *x, void *y, void *workspace,
                         int64_t outer, int64_t len, int64_t inner, const NormReduceSplit &split,
                         cudaStream_t stream) {
  if (outer <= 0 || len <= 0 || inner <= 0 || split.splits < 1 || (split.splits > 1 && !workspace))
    return cudaErrorInvalidValue;
  bool kindOk = false;
  bool ok = dispatchReduce(dtype, [&](auto tag) {
    using T = decltype(tag);
    kindOk = dispatchKind(kind, [&](auto k) {
      reduceLaunch<T, decltype(k)::value>(static_cast<const T *>(x), static_cast<T *>(y), workspace,
                                          outer, len, inner, split, stream);
    });
  });
  if (!ok || !kindOk)
    return cudaErrorInvalidValue;
  return cudaGetLastError();
}

cudaError_t launchCumSum(int32_t dtype, const void *x, void *y, int64_t outer, int64_t n,
                         int64_t inner, bool exclusive, bool reverse, cudaStream_t stream) {
  if (outer <= 0 || n <= 0 || inner <= 0)
    return cudaErrorInvalidValue;
  int64_t lines = outer * inner;
  bool ok = dispatchReduce(dtype, [&](auto tag) {
    using T = decltype(tag);
    cumSumKernel<T><<<blocksFor(lines), 256, 0, stream>>>(
        static_cast<const T *>(x), static_cast<T *>(y), lines, n, inner, exclusive, reverse);
  });
  if (!ok)
    return cudaErrorInvalidValue;
  return cudaGetLastError();
}

} // namespace qn::rt::cuda
