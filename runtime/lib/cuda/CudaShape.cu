//===- CudaShape.cu - Data-movement kernels of the CUDA device ------------===//
//
// Strided copy (Transpose, Slice, Expand, Split), Concat, Gather, GatherND,
// ScatterND, Trilu.
// Kernels move elements by size only (1, 2, 4, 8 or 16-byte words) and use
// 32-bit index arithmetic whenever every index and offset fits (64-bit
// division is several times slower on the GPU).
//
//===----------------------------------------------------------------------===//
#include "CudaShape.h"

#include "CudaIndex.cuh"

#include <algorithm>
#include <climits>
#include <type_traits>
#include <cmath>
#include <vector>

namespace qn::rt::cuda {
namespace {

constexpr int kThreads = 256;
constexpr double kMax32 = 2147483647.0;

/// Calls f(T{}) with T an element type of `elemSize` bytes, 16 included
/// (uint4: four 32-bit words, 16-byte aligned).
template <class F> bool dispatchWide(size_t elemSize, F &&f) {
  if (elemSize == 16) {
    f(uint4{});
    return true;
  }
  return dispatchBySize(elemSize, f);
}

bool aligned(const void *p, size_t w) { return reinterpret_cast<uintptr_t>(p) % w == 0; }

cudaError_t copyBytes(void *dst, const void *src, size_t bytes, cudaStream_t stream) {
  if (bytes == 0)
    return cudaSuccess;
  return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream);
}

//===----------------------------------------------------------------------===//
// Strided copy
//===----------------------------------------------------------------------===//

/// A coalesced copy: out (contiguous over d) element i reads in[offset(i)].
template <class I> struct CopyDims {
  int rank = 0;
  I d[kMaxDims] = {};
  I s[kMaxDims] = {};
};

template <class T, class I>
__global__ void stridedCopyKernel(const T *__restrict__ in, T *__restrict__ out, int64_t n,
                                  CopyDims<I> g) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)gridDim.x * blockDim.x) {
    I rem = static_cast<I>(i), off = 0;
    // Unrolled with a guard (not a loop to g.rank): indexing g statically
    // keeps it in the parameter bank instead of a local-memory copy.
#pragma unroll
    for (int k = kMaxDims - 1; k > 0; --k) {
      if (k < g.rank) {
        I q = rem / g.d[k];
        off += (rem - q * g.d[k]) * g.s[k];
        rem = q;
      }
    }
    off += rem * g.s[0];
    out[i] = in[off];
  }
}

/// A transposition through shared-memory tiles: the coalesced copy has an
/// axis P with input stride 1 and its last axis Q (output stride 1) has
/// another input stride; the other axes are a batch. Tiles of 32 x 32 are
/// read along P and written along Q, both coalesced.
constexpr int kTile = 32, kTileRows = 8;

template <class I> struct TileArgs {
  int nb = 0;                                 // batch axes
  I bd[kMaxDims] = {}, bin[kMaxDims] = {}, bout[kMaxDims] = {}; // their sizes, in/out strides
  I P = 0, Q = 0, inQ = 0, outP = 0;          // sizes; in stride of Q, out stride of P
  I tilesP = 0, tilesQ = 0;
  int64_t tiles = 0;
};

template <class T, class I>
__global__ void __launch_bounds__(kTile *kTileRows)
    transposeTiledKernel(const T *__restrict__ in, T *__restrict__ out, TileArgs<I> a) {
  __shared__ T tile[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int64_t t = blockIdx.x; t < a.tiles; t += gridDim.x) {
    I rest = static_cast<I>(t);
    I tq = rest % a.tilesQ;
    rest /= a.tilesQ;
    I tp = rest % a.tilesP;
    rest /= a.tilesP;
    I inOff = 0, outOff = 0;
    for (int k = a.nb - 1; k >= 0; --k) {
      I q = rest / a.bd[k];
      I c = rest - q * a.bd[k];
      inOff += c * a.bin[k];
      outOff += c * a.bout[k];
      rest = q;
    }
    const I p0 = tp * kTile, q0 = tq * kTile;
    const I p = p0 + tx;
    for (int j = ty; j < kTile; j += kTileRows) {
      I q = q0 + j;
      if (p < a.P && q < a.Q)
        tile[j][tx] = in[inOff + p + q * a.inQ];
    }
    __syncthreads();
    const I q = q0 + tx;
    for (int j = ty; j < kTile; j += kTileRows) {
      I pp = p0 + j;
      if (pp < a.P && q < a.Q)
        out[outOff + pp * a.outP + q] = tile[tx][j];
    }
    __syncthreads();
  }
}

/// Drops size-1 dims and merges dims contiguous in the source. False when a
/// dim is 0 (nothing to copy).
bool coalesce(std::vector<int64_t> &d, std::vector<int64_t> &s) {
  std::vector<int64_t> nd, ns;
  for (size_t k = 0; k < d.size(); ++k) {
    if (d[k] == 0)
      return false;
    if (d[k] == 1)
      continue;
    if (!nd.empty() && ns.back() == s[k] * d[k]) {
      nd.back() *= d[k];
      ns.back() = s[k];
      continue;
    }
    nd.push_back(d[k]);
    ns.push_back(s[k]);
  }
  d.swap(nd);
  s.swap(ns);
  return true;
}

template <class I>
cudaError_t launchTiled(const char *src, const std::vector<int64_t> &d,
                        const std::vector<int64_t> &s, size_t p, char *out, size_t es,
                        cudaStream_t stream) {
  size_t r = d.size();
  std::vector<int64_t> os(r, 1); // output (contiguous) strides
  for (size_t k = r - 1; k-- > 0;)
    os[k] = os[k + 1] * d[k + 1];
  TileArgs<I> a;
  for (size_t k = 0; k + 1 < r; ++k) {
    if (k == p)
      continue;
    a.bd[a.nb] = static_cast<I>(d[k]);
    a.bin[a.nb] = static_cast<I>(s[k]);
    a.bout[a.nb] = static_cast<I>(os[k]);
    ++a.nb;
  }
  a.P = static_cast<I>(d[p]);
  a.Q = static_cast<I>(d[r - 1]);
  a.inQ = static_cast<I>(s[r - 1]);
  a.outP = static_cast<I>(os[p]);
  a.tilesP = static_cast<I>((d[p] + kTile - 1) / kTile);
  a.tilesQ = static_cast<I>((d[r - 1] + kTile - 1) / kTile);
  int64_t batch = 1;
  for (int k = 0; k < a.nb; ++k)
    batch *= static_cast<int64_t>(a.bd[k]);
  a.tiles = batch * static_cast<int64_t>(a.tilesP) * static_cast<int64_t>(a.tilesQ);
  unsigned blocks = blocksFor(a.tiles, 1);
  dim3 block(kTile, kTileRows);
  bool ok = dispatchBySize(es, [&](auto tag) {
    using T = decltype(tag);
    transposeTiledKernel<T, I><<<blocks, block, 0, stream>>>(reinterpret_cast<const T *>(src),
                                                             reinterpret_cast<T *>(out), a);
  });
  return ok ? cudaGetLastError() : cudaErrorInvalidValue;
}

template <class I>
cudaError_t launchGeneric(const char *src, const std::vector<int64_t> &d,
                          const std::vector<int64_t> &s, int64_t n, char *out, size_t es,
                          cudaStream_t stream) {
  CopyDims<I> g;
  g.rank = static_cast<int>(d.size());
  for (size_t k = 0; k < d.size(); ++k) {
    g.d[k] = static_cast<I>(d[k]);
    g.s[k] = static_cast<I>(s[k]);
  }
  bool ok = dispatchWide(es, [&](auto tag) {
    using T = decltype(tag);
    stridedCopyKernel<T, I><<<blocksFor(n, kThreads), kThreads, 0, stream>>>(
        reinterpret_cast<const T *>(src), reinterpret_cast<T *>(out), n, g);
  });
  return ok ? cudaGetLastError() : cudaErrorInvalidValue;
}

/// The copy of coalesced dims d/s from `src` (the first element) into `out`.
cudaError_t copyCoalesced(const char *src, std::vector<int64_t> d, std::vector<int64_t> s,
                          char *out, size_t es, cudaStream_t stream) {
  if (d.empty())
    return copyBytes(out, src, es, stream);
  int64_t n = 1;
  for (int64_t x : d)
    n *= x;
  if (d.size() == 1 && s[0] == 1)
    return copyBytes(out, src, static_cast<size_t>(n) * es, stream);
  // Rows contiguous in the source: move them in wider words when every row
  // start is aligned to the word.
  if (s.back() == 1) {
    for (size_t w = 16; w > es; w /= 2) {
      bool ok = (d.back() * static_cast<int64_t>(es)) % static_cast<int64_t>(w) == 0 &&
                aligned(src, w) && aligned(out, w);
      for (size_t k = 0; ok && k + 1 < d.size(); ++k)
        ok = (s[k] * static_cast<int64_t>(es)) % static_cast<int64_t>(w) == 0;
      if (!ok)
        continue;
      int64_t f = static_cast<int64_t>(w / es);
      d.back() /= f;
      for (size_t k = 0; k + 1 < d.size(); ++k)
        s[k] /= f;
      n /= f;
      es = w;
      coalesce(d, s);
      if (d.empty())
        return copyBytes(out, src, es, stream);
      if (d.size() == 1 && s[0] == 1)
        return copyBytes(out, src, static_cast<size_t>(n) * es, stream);
      break;
    }
  }
  if (d.size() > static_cast<size_t>(kMaxDims)) {
    // Rare (more than 8 dims that do not merge): one copy per index of the
    // leading dim.
    std::vector<int64_t> d1(d.begin() + 1, d.end()), s1(s.begin() + 1, s.end());
    int64_t sub = n / d[0];
    for (int64_t j = 0; j < d[0]; ++j) {
      cudaError_t e = copyCoalesced(src + j * s[0] * static_cast<int64_t>(es), d1, s1,
                                    out + j * sub * static_cast<int64_t>(es), es, stream);
      if (e != cudaSuccess)
        return e;
    }
    return cudaSuccess;
  }
  double span = 0; // largest |offset| reachable from src
  for (size_t k = 0; k < d.size(); ++k)
    span += static_cast<double>(d[k] - 1) * std::fabs(static_cast<double>(s[k]));
  bool small = static_cast<double>(n) <= kMax32 && span <= kMax32;
  size_t r = d.size();
  if (r >= 2 && es <= 8 && s[r - 1] != 1 && s[r - 1] != 0 && d[r - 1] >= 16) {
    for (size_t p = 0; p + 1 < r; ++p) {
      if (s[p] != 1 || d[p] < 16)
        continue;
      return small ? launchTiled<int32_t>(src, d, s, p, out, es, stream)
                   : launchTiled<int64_t>(src, d, s, p, out, es, stream);
    }
  }
  return small ? launchGeneric<int32_t>(src, d, s, n, out, es, stream)
               : launchGeneric<int64_t>(src, d, s, n, out, es, stream);
}

//===----------------------------------------------------------------------===//
// Concat
//===----------------------------------------------------------------------===//

constexpr int kConcatMax = 32;

struct ConcatArgs {
  const void *src[kConcatMax];
  int64_t begin[kConcatMax + 1]; // of each input's chunk in the segment
  int n;
};

template <class T, class I>
__global__ void concatKernel(ConcatArgs a, T *__restrict__ out, int64_t total, I segLen,
                             I rowLen, I segBegin) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    I e = static_cast<I>(i);
    I o = e / segLen;
    I r = e - o * segLen;
    int lo = 0, hi = a.n; // the last input whose chunk begins at or before r
    while (hi - lo > 1) {
      int mid = (lo + hi) >> 1;
      if (static_cast<I>(a.begin[mid]) <= r)
        lo = mid;
      else
        hi = mid;
    }
    I b = static_cast<I>(a.begin[lo]);
    I chunk = static_cast<I>(a.begin[lo + 1]) - b;
    out[o * rowLen + segBegin + r] = static_cast<const T *>(a.src[lo])[o * chunk + (r - b)];
  }
}

template <class T, class I>
cudaError_t concatLaunch(const std::vector<const void *> &srcs, const std::vector<int64_t> &chunks,
                         int64_t outer, int64_t row, char *out, cudaStream_t stream) {
  size_t n = srcs.size();
  int64_t segBegin = 0;
  for (size_t first = 0; first < n; first += kConcatMax) {
    ConcatArgs a;
    a.n = static_cast<int>(std::min<size_t>(kConcatMax, n - first));
    int64_t len = 0;
    for (int k = 0; k < a.n; ++k) {
      a.src[k] = srcs[first + k];
      a.begin[k] = len;
      len += chunks[first + k];
    }
    a.begin[a.n] = len;
    for (int k = a.n + 1; k <= kConcatMax; ++k)
      a.begin[k] = len;
    for (int k = a.n; k < kConcatMax; ++k)
      a.src[k] = nullptr;
    int64_t total = outer * len;
    concatKernel<T, I><<<blocksFor(total, kThreads), kThreads, 0, stream>>>(
        a, reinterpret_cast<T *>(out), total, static_cast<I>(len), static_cast<I>(row),
        static_cast<I>(segBegin));
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess)
      return e;
    segBegin += len;
  }
  return cudaSuccess;
}

//===----------------------------------------------------------------------===//
// Gather, Trilu
//===----------------------------------------------------------------------===//

template <class T, class Idx, class I>
__global__ void gatherKernel(const T *__restrict__ data, const Idx *__restrict__ idx,
                             T *__restrict__ out, int64_t total, I axisLen, I inner, I count,
                             FaultSite fault) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    I r = static_cast<I>(i);
    I row = r / inner;
    I c = r - row * inner;
    I o = row / count;
    I j = row - o * count;
    int64_t v = static_cast<int64_t>(idx[j]);
    if (v < 0)
      v += axisLen;
    T val{};
    if (v >= 0 && v < static_cast<int64_t>(axisLen))
      val = data[(o * axisLen + static_cast<I>(v)) * inner + c];
    else
      reportFault(fault, kFaultGatherIndex);
    out[i] = val;
  }
}

/// The element offset of the slice tuple `t` selects (within its batch), or
/// -1 when a component is out of range.
__device__ __forceinline__ int64_t tupleOffset(const int64_t *__restrict__ idx, int64_t t,
                                               const IndexND &ix) {
  int64_t off = 0;
  const int64_t *p = idx + t * ix.k;
  for (int m = 0; m < kMaxIndexND; ++m) { // to a constant bound: ix stays in parameters
    if (m >= ix.k)
      break;
    int64_t v = p[m], d = ix.dims[m];
    if (v < 0)
      v += d;
    if (v < 0 || v >= d)
      return -1;
    off += v * ix.strides[m];
  }
  return off;
}

template <class T>
__global__ void gatherNDKernel(const T *__restrict__ data, const int64_t *__restrict__ idx,
                               T *__restrict__ out, int64_t total, int64_t tuples,
                               int64_t dataBatch, int64_t slice, IndexND ix, FaultSite fault) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t j = i / slice, c = i - j * slice;
    int64_t off = tupleOffset(idx, j, ix);
    T val{};
    if (off >= 0)
      val = data[(j / tuples) * dataBatch + off + c];
    else
      reportFault(fault, kFaultGatherIndex);
    out[i] = val;
  }
}

/// ScatterND without a reduction: one thread per element of the updates.
template <class T>
__global__ void scatterNDKernel(const int64_t *__restrict__ idx, const T *__restrict__ upd,
                                T *__restrict__ out, int64_t total, int64_t slice, IndexND ix,
                                FaultSite fault) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int64_t t = i / slice, c = i - t * slice;
    int64_t off = tupleOffset(idx, t, ix);
    if (off >= 0)
      out[off + c] = upd[i];
    else
      reportFault(fault, kFaultGatherIndex);
  }
}

/// dst reduced with u (reduction 1 add, 2 mul, 3 max, 4 min) in the CPU
/// kernel's arithmetic: half types in float, rounded each time; integers wrap;
/// max/min keep a NaN of either operand.
template <class T> __device__ __forceinline__ T scatterApply(int red, T dst, T u) {
  if constexpr (std::is_integral_v<T>) {
    using U = std::make_unsigned_t<T>;
    switch (red) {
    case 1: return static_cast<T>(static_cast<U>(dst) + static_cast<U>(u));
    case 2: return static_cast<T>(static_cast<U>(dst) * static_cast<U>(u));
    case 3: return u > dst ? u : dst;
    case 4: return u < dst ? u : dst;
    default: return u;
    }
  } else {
    using A = typename Acc<T>::type; // float for the half types
    constexpr bool half = !std::is_same_v<A, T>;
    A a, b;
    if constexpr (half) {
      a = toF(dst);
      b = toF(u);
    } else {
      a = dst;
      b = u;
    }
    A r = b;
    switch (red) {
    case 1: r = a + b; break;
    case 2: r = a * b; break;
    case 3: r = b != b || b > a ? b : a; break;
    case 4: r = b != b || b < a ? b : a; break;
    default: break;
    }
    if constexpr (half)
      return fromF<T>(r);
    else
      return r;
  }
}

/// ScatterND with a reduction: one thread per element of a slice, over the
/// tuples in order (so duplicates reduce in the CPU kernel's order).
template <class T>
__global__ void scatterNDReduceKernel(const int64_t *__restrict__ idx, const T *__restrict__ upd,
                                      T *__restrict__ out, int64_t tuples, int64_t slice,
                                      IndexND ix, int red, FaultSite fault) {
  for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < slice;
       c += (int64_t)gridDim.x * blockDim.x) {
    for (int64_t t = 0; t < tuples; ++t) {
      int64_t off = tupleOffset(idx, t, ix);
      if (off < 0) {
        reportFault(fault, kFaultGatherIndex);
        continue;
      }
      out[off + c] = scatterApply<T>(red, out[off + c], upd[t * slice + c]);
    }
  }
}

template <class T, class I>
__global__ void triluKernel(const T *__restrict__ in, T *__restrict__ out, int64_t total, I rows,
                            I cols, I k, bool upper) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    I e = static_cast<I>(i);
    I rr = e / cols;
    I c = e - rr * cols;
    I r = rr % rows;
    I diff = c - r;
    bool keep = upper ? diff >= k : diff <= k;
    out[i] = keep ? in[i] : T{};
  }
}

} // namespace

//===----------------------------------------------------------------------===//
// Launchers
//===----------------------------------------------------------------------===//

cudaError_t launchStridedCopy(const void *in, int64_t base, int rank, const int64_t *outShape,
                              const int64_t *inStrides, void *out, size_t elemSize,
                              cudaStream_t stream) {
  if (elemSize != 1 && elemSize != 2 && elemSize != 4 && elemSize != 8 && elemSize != 16)
    return cudaErrorInvalidValue;
  std::vector<int64_t> d(outShape, outShape + rank), s(inStrides, inStrides + rank);
  if (!coalesce(d, s))
    return cudaSuccess; // empty
  const char *src = static_cast<const char *>(in) + base * static_cast<int64_t>(elemSize);
  return copyCoalesced(src, std::move(d), std::move(s), static_cast<char *>(out), elemSize,
                       stream);
}

cudaError_t launchConcat(const void *const *srcs, const int64_t *chunks, int n, int64_t outer,
                         void *out, size_t elemSize, cudaStream_t stream) {
  if (elemSize != 1 && elemSize != 2 && elemSize != 4 && elemSize != 8)
    return cudaErrorInvalidValue;
  std::vector<const void *> ps;
  std::vector<int64_t> cs;
  int64_t row = 0;
  for (int i = 0; i < n; ++i) {
    row += chunks[i];
    if (chunks[i] > 0) {
      ps.push_back(srcs[i]);
      cs.push_back(chunks[i]);
    }
  }
  if (outer == 0 || row == 0)
    return cudaSuccess;
  char *dst = static_cast<char *>(out);
  if (outer == 1) { // each input is one contiguous block of the output
    int64_t off = 0;
    for (size_t i = 0; i < ps.size(); ++i) {
      cudaError_t e = copyBytes(dst + off * static_cast<int64_t>(elemSize), ps[i],
                                static_cast<size_t>(cs[i]) * elemSize, stream);
      if (e != cudaSuccess)
        return e;
      off += cs[i];
    }
    return cudaSuccess;
  }
  // Wider words when every chunk (and so every row) is a multiple of the word
  // and every pointer aligned to it.
  size_t es = elemSize;
  for (size_t w = 16; w > elemSize; w /= 2) {
    bool ok = aligned(out, w);
    for (size_t i = 0; ok && i < ps.size(); ++i)
      ok = aligned(ps[i], w) &&
           (cs[i] * static_cast<int64_t>(elemSize)) % static_cast<int64_t>(w) == 0;
    if (!ok)
      continue;
    int64_t f = static_cast<int64_t>(w / elemSize);
    for (int64_t &c : cs)
      c /= f;
    row /= f;
    es = w;
    break;
  }
  bool small = static_cast<double>(outer) * static_cast<double>(row) <= kMax32;
  cudaError_t result = cudaErrorInvalidValue;
  dispatchWide(es, [&](auto tag) {
    using T = decltype(tag);
    result = small ? concatLaunch<T, int32_t>(ps, cs, outer, row, dst, stream)
                   : concatLaunch<T, int64_t>(ps, cs, outer, row, dst, stream);
  });
  return result;
}

cudaError_t launchGather(const void *data, const void *indices, bool indices64, int64_t outer,
                         int64_t axisLen, int64_t inner, int64_t count, void *out,
                         size_t elemSize, FaultSite fault, cudaStream_t stream) {
  if (elemSize != 1 && elemSize != 2 && elemSize != 4 && elemSize != 8)
    return cudaErrorInvalidValue;
  if (outer == 0 || inner == 0 || count == 0)
    return cudaSuccess;
  size_t es = elemSize;
  for (size_t w = 16; w > elemSize; w /= 2) {
    if ((inner * static_cast<int64_t>(elemSize)) % static_cast<int64_t>(w) == 0 &&
        aligned(data, w) && aligned(out, w)) {
      inner /= static_cast<int64_t>(w / elemSize);
      es = w;
      break;
    }
  }
  int64_t total = outer * count * inner;
  bool small = static_cast<double>(total) <= kMax32 &&
               static_cast<double>(outer) * static_cast<double>(axisLen) *
                       static_cast<double>(inner) <=
                   kMax32;
  unsigned blocks = blocksFor(total, kThreads);
  dispatchWide(es, [&](auto tag) {
    using T = decltype(tag);
    const T *src = static_cast<const T *>(data);
    T *dst = static_cast<T *>(out);
    if (indices64) {
      const int64_t *ix = static_cast<const int64_t *>(indices);
      if (small)
        gatherKernel<T, int64_t, int32_t><<<blocks, kThreads, 0, stream>>>(
            src, ix, dst, total, static_cast<int32_t>(axisLen), static_cast<int32_t>(inner),
            static_cast<int32_t>(count), fault);
      else
        gatherKernel<T, int64_t, int64_t>
            <<<blocks, kThreads, 0, stream>>>(src, ix, dst, total, axisLen, inner, count, fault);
    } else {
      const int32_t *ix = static_cast<const int32_t *>(indices);
      if (small)
        gatherKernel<T, int32_t, int32_t><<<blocks, kThreads, 0, stream>>>(
            src, ix, dst, total, static_cast<int32_t>(axisLen), static_cast<int32_t>(inner),
            static_cast<int32_t>(count), fault);
      else
        gatherKernel<T, int32_t, int64_t>
            <<<blocks, kThreads, 0, stream>>>(src, ix, dst, total, axisLen, inner, count, fault);
    }
  });
  return cudaGetLastError();
}

cudaError_t launchGatherND(const void *data, const int64_t *indices, int64_t batch,
                           int64_t tuples, int64_t dataBatch, const IndexND &ix, int64_t slice,
                           void *out, size_t elemSize, FaultSite fault, cudaStream_t stream) {
  if (ix.k < 1 || ix.k > kMaxIndexND)
    return cudaErrorInvalidValue;
  int64_t total = batch * tuples * slice;
  if (total == 0)
    return cudaSuccess;
  bool ok = dispatchBySize(elemSize, [&](auto tag) {
    using T = decltype(tag);
    gatherNDKernel<T><<<blocksFor(total, kThreads), kThreads, 0, stream>>>(
        static_cast<const T *>(data), indices, static_cast<T *>(out), total, tuples, dataBatch,
        slice, ix, fault);
  });
  return ok ? cudaGetLastError() : cudaErrorInvalidValue;
}

cudaError_t launchScatterND(int32_t dtype, int reduction, const void *data, int64_t dataNumel,
                            const int64_t *indices, const void *updates, int64_t tuples,
                            const IndexND &ix, int64_t slice, void *out, size_t elemSize,
                            FaultSite fault, cudaStream_t stream) {
  if (ix.k < 1 || ix.k > kMaxIndexND || reduction < 0 || reduction > 4)
    return cudaErrorInvalidValue;
  if (cudaError_t e = copyBytes(out, data, static_cast<size_t>(dataNumel) * elemSize, stream);
      e != cudaSuccess)
    return e;
  int64_t total = tuples * slice;
  if (total == 0)
    return cudaSuccess;
  bool ok;
  if (reduction == 0) {
    ok = dispatchBySize(elemSize, [&](auto tag) {
      using T = decltype(tag);
      scatterNDKernel<T><<<blocksFor(total, kThreads), kThreads, 0, stream>>>(
          indices, static_cast<const T *>(updates), static_cast<T *>(out), total, slice, ix,
          fault);
    });
  } else {
    ok = dtype != DT_I8 && dtype != DT_U8 && dtype != DT_BOOL &&
         dispatchAll(dtype, [&](auto tag) {
           using T = decltype(tag);
           scatterNDReduceKernel<T><<<blocksFor(slice, kThreads), kThreads, 0, stream>>>(
               indices, static_cast<const T *>(updates), static_cast<T *>(out), tuples, slice,
               ix, reduction, fault);
         });
  }
  return ok ? cudaGetLastError() : cudaErrorInvalidValue;
}

cudaError_t launchTrilu(const void *in, void *out, int64_t mats, int64_t rows, int64_t cols,
                        int64_t k, bool upper, size_t elemSize, cudaStream_t stream) {
  int64_t total = mats * rows * cols;
  if (total == 0)
    return cudaSuccess;
  // Beyond these bounds every row keeps all or none of its columns.
  k = std::min<int64_t>(std::max<int64_t>(k, -rows - 1), cols + 1);
  bool small = static_cast<double>(total) <= kMax32 - 4;
  unsigned blocks = blocksFor(total, kThreads);
  bool ok = dispatchBySize(elemSize, [&](auto tag) {
    using T = decltype(tag);
    const T *src = static_cast<const T *>(in);
    T *dst = static_cast<T *>(out);
    if (small)
      triluKernel<T, int32_t><<<blocks, kThreads, 0, stream>>>(
          src, dst, total, static_cast<int32_t>(rows), static_cast<int32_t>(cols),
          static_cast<int32_t>(k), upper);
    else
      triluKernel<T, int64_t><<<blocks, kThreads, 0, stream>>>(src, dst, total, rows, cols, k,
                                                                upper);
  });
  return ok ? cudaGetLastError() : cudaErrorInvalidValue;
}

} // namespace qn::rt::cuda
