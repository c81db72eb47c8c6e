//===- FastMath.h - Math functions shared by host and device -----*- C++ -*-===//
//
// One definition for the CPU kernels (runtime/lib/cpu/CpuElementwise.cpp),
// the CUDA kernels (runtime/lib/cuda/CudaElementwise.cu) and the fused
// programs (FuseProgram.h), so that every device and path computes these
// functions alike. Plain C++ for the host compiler and nvcc: no LLVM, no
// ONNX here.
//
//===----------------------------------------------------------------------===//
#pragma once

#if defined(__CUDACC__)
#define QN_HD __host__ __device__
#else
#define QN_HD
#endif

namespace qn::rt {

/// erf for float32: a rational approximation x*P(x^2)/Q(x^2) on [-4, 4]
/// (erf rounds to +-1 in float32 beyond), branch-free so that loops over it
/// vectorise; max abs error 4.3e-7 against the exact erf. NaN stays NaN.
/// float64 callers use std::erf / erf().
QN_HD inline float fastErf(float x) {
#if defined(__CUDA_ARCH__)
  x = x < -4.0f ? -4.0f : x;
  x = x > 4.0f ? 4.0f : x;
#else
  x = __builtin_isless(x, -4.0f) ? -4.0f : x; // quiet comparisons: vectorisable
  x = __builtin_isgreater(x, 4.0f) ? 4.0f : x;
#endif
  const float x2 = x * x;
  float p = -2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 + -2.10102402082508e-06f;
  p = p * x2 + -5.69250639462346e-05f;
  p = p * x2 + -7.34990630326855e-04f;
  p = p * x2 + -2.95459980854025e-03f;
  p = p * x2 + -1.60960333262415e-02f;
  p = p * x;
  float q = -1.45660718464996e-05f;
  q = q * x2 + -2.13374055278905e-04f;
  q = q * x2 + -1.68282697438203e-03f;
  q = q * x2 + -7.37332916720468e-03f;
  q = q * x2 + -1.42647390514189e-02f;
  return p / q;
}

/// tanh for float32 on the host (the CUDA kernels use tanhf), written so
/// that loops over it vectorise: std::tanh is a libm call per element (~20 ns;
/// the exported GELU's cost on the CPU). |x| <= 0.5: the odd Taylor polynomial
/// through x^15 (the rest is below 5e-9 of the value); beyond, (1 - e) / (1 +
/// e) with e = exp(-2|x|) from a Cody-Waite range reduction and a degree-7
/// polynomial (|x| clamped to 9, where tanh is 1 in float32). Max abs error
/// 9e-8, relative 1.6e-7. NaN stays NaN, +-inf gives +-1, -0 stays -0.
/// GCC (default -ftrapping-math) turns most float selects into branches, so
/// the rounding, the 2^n and the choice of branch are integer bit arithmetic
/// and the two branches are blended: the loop vectorises.
inline float fastTanh(float x) {
  union Bits {
    unsigned u;
    float f;
  };
  // |x| clamped to 9 as integers (non-negative floats order as their bits);
  // a NaN becomes 9 here and is put back at the end.
  Bits xb, ab;
  xb.f = x;
  const unsigned absBits = xb.u & 0x7FFFFFFFu, nine = 0x41100000u; // 9.0f
  ab.u = absBits < nine ? absBits : nine;
  const float a = ab.f;
  const float x2 = a * a;
  float s = -929569.0f / 638512875.0f; // tanh's series: x + c3 x^3 + ...
  s = s * x2 + 21844.0f / 6081075.0f;
  s = s * x2 + -1382.0f / 155925.0f;
  s = s * x2 + 62.0f / 2835.0f;
  s = s * x2 + -17.0f / 315.0f;
  s = s * x2 + 2.0f / 15.0f;
  s = s * x2 + -1.0f / 3.0f;
  const float small = a + a * x2 * s;
  // e = exp(t), t = -2|x| in [-18, 0]: t = n ln2 + r, |r| <= ln2 / 2, n
  // rounded to nearest by adding and taking away 1.5 * 2^23.
  const float t = -2.0f * a;
  const float magic = 12582912.0f;
  const float big23 = t * 1.44269504088896341f + magic; // n in its low bits
  const float n = big23 - magic;                        // in [-26, 0]
  const float r = (t - n * 0.693145751953125f) - n * 1.428606820309417232e-6f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  Bits nb, scale, d, out;
  nb.f = big23;
  scale.u = (nb.u - 0x4B400000u + 127u) << 23; // 2^n (n + 127 in the exponent)
  const float e = p * scale.f;
  const float big = (1.0f - e) / (1.0f + e);
  // The small branch where a - 0.5 is negative (its sign bit).
  d.f = a - 0.5f;
  const float w = static_cast<float>(d.u >> 31);
  out.f = big + (small - big) * w;
  // x's sign; a NaN x itself.
  const unsigned nanMask = absBits > 0x7F800000u ? ~0u : 0u;
  out.u = ((out.u | (xb.u & 0x80000000u)) & ~nanMask) | (xb.u & nanMask);
  return out.f;
}

} // namespace qn::rt
