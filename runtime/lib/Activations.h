//===- Activations.h - Per-element math of the parametric unary ops -*- C++ -*-===//
//
// One definition of each op's math, shared by the CPU kernel
// (cpu/CpuElementwise.cpp), the CUDA kernel (cuda/CudaElementwise.cu) and
// the fused register programs (FuseProgram.h). Plain C++ usable from nvcc:
// no LLVM, no ONNX here.
//
// Adding such an op: its line in the op table (ops/include/qn/ops/Ops.def,
// OK_Unary, devices OV_Cpu | OV_Cuda, OF_Fusable), an Act value, its row in
// kActs (name, attributes with their ONNX defaults, the dtypes it takes) and
// its case in applyAct below; then one test (test/unit/runtime/ActivationTest.cpp
// lists its values against a reference). The CPU and CUDA registries, the
// sharding rule and the fusion table follow from those.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <math.h>
#include <cstdint>
#include <type_traits>

#include "FastMath.h" // QN_HD

namespace qn::rt {

enum class Act : uint8_t {
  Softplus,    // log(1 + exp(x))
  LeakyRelu,   // x < 0 ? alpha * x : x                      (alpha 0.01)
  Elu,         // x < 0 ? alpha * (exp(x) - 1) : x           (alpha 1)
  Selu,        // gamma * (x <= 0 ? alpha * (exp(x) - 1) : x) (alpha 1.67326..., gamma 1.0507...)
  HardSigmoid, // max(0, min(1, alpha * x + beta))           (alpha 0.2, beta 0.5)
  HardSwish,   // x * max(0, min(1, x / 6 + 0.5))
  Floor,
  Ceil,
  Round,       // halves to even
  Sign,        // -1, 0, 1 (NaN stays NaN); integers too
};

/// The attributes of an op (a for the first, b for the second), read by
/// name with their ONNX defaults.
struct ActParams {
  float a = 0, b = 0;
};

struct ActInfo {
  const char *name;
  Act act;
  const char *attrA; // null: none
  float defaultA;
  const char *attrB;
  float defaultB;
  bool integers; // also int32, int64, int8 (else float types only)
};

inline constexpr ActInfo kActs[] = {
    {"Softplus", Act::Softplus, nullptr, 0, nullptr, 0, false},
    {"LeakyRelu", Act::LeakyRelu, "alpha", 0.01f, nullptr, 0, false},
    {"Elu", Act::Elu, "alpha", 1.0f, nullptr, 0, false},
    {"Selu", Act::Selu, "alpha", 1.67326319217681884765625f, "gamma", 1.05070102214813232421875f,
     false},
    {"HardSigmoid", Act::HardSigmoid, "alpha", 0.2f, "beta", 0.5f, false},
    {"HardSwish", Act::HardSwish, nullptr, 0, nullptr, 0, false},
    {"Floor", Act::Floor, nullptr, 0, nullptr, 0, false},
    {"Ceil", Act::Ceil, nullptr, 0, nullptr, 0, false},
    {"Round", Act::Round, nullptr, 0, nullptr, 0, false},
    {"Sign", Act::Sign, nullptr, 0, nullptr, 0, true},
};

// The C library's functions by type: these exist on the host and in CUDA
// device code alike.
QN_HD inline float actExp(float x) { return expf(x); }
QN_HD inline double actExp(double x) { return exp(x); }
QN_HD inline float actLog1p(float x) { return log1pf(x); }
QN_HD inline double actLog1p(double x) { return log1p(x); }
QN_HD inline float actExpm1(float x) { return expm1f(x); }
QN_HD inline double actExpm1(double x) { return expm1(x); }
QN_HD inline float actFloor(float x) { return floorf(x); }
QN_HD inline double actFloor(double x) { return floor(x); }
QN_HD inline float actCeil(float x) { return ceilf(x); }
QN_HD inline double actCeil(double x) { return ceil(x); }
QN_HD inline float actRint(float x) { return rintf(x); }
QN_HD inline double actRint(double x) { return rint(x); }

/// T: float or double (the compute type: half types compute in float), or
/// an integer type for the ops with `integers`.
template <Act A, class T> QN_HD inline T applyAct(T x, ActParams p) {
  if constexpr (A == Act::Sign) {
    if constexpr (std::is_floating_point_v<T>)
      return x > T(0) ? T(1) : x < T(0) ? T(-1) : x; // 0, -0 and NaN as they are
    else
      return x > T(0) ? T(1) : x < T(0) ? T(-1) : T(0);
  } else {
    static_assert(std::is_floating_point_v<T>, "float types only");
    const T a = T(p.a), b = T(p.b);
    if constexpr (A == Act::Softplus) {
      // log1p(exp(x)) without overflow: x + log1p(exp(-x)) for x > 0.
      return x > T(0) ? x + actLog1p(actExp(-x)) : actLog1p(actExp(x));
    } else if constexpr (A == Act::LeakyRelu) {
      return x < T(0) ? a * x : x;
    } else if constexpr (A == Act::Elu) {
      return x < T(0) ? a * actExpm1(x) : x;
    } else if constexpr (A == Act::Selu) {
      return x <= T(0) ? b * (a * actExpm1(x)) : b * x;
    } else if constexpr (A == Act::HardSigmoid) {
      T v = a * x + b;
      return v < T(0) ? T(0) : v > T(1) ? T(1) : v;
    } else if constexpr (A == Act::HardSwish) {
      T v = x / T(6) + T(0.5);
      return x * (v < T(0) ? T(0) : v > T(1) ? T(1) : v);
    } else if constexpr (A == Act::Floor) {
      return actFloor(x);
    } else if constexpr (A == Act::Ceil) {
      return actCeil(x);
    } else {
      static_assert(A == Act::Round);
      return actRint(x); // the default rounding mode: halves to even
    }
  }
}

/// applyAct with the op chosen at run time (the fused programs).
template <class T> QN_HD inline T applyActDyn(Act a, T x, ActParams p) {
  switch (a) {
  case Act::Softplus: return applyAct<Act::Softplus>(x, p);
  case Act::LeakyRelu: return applyAct<Act::LeakyRelu>(x, p);
  case Act::Elu: return applyAct<Act::Elu>(x, p);
  case Act::Selu: return applyAct<Act::Selu>(x, p);
  case Act::HardSigmoid: return applyAct<Act::HardSigmoid>(x, p);
  case Act::HardSwish: return applyAct<Act::HardSwish>(x, p);
  case Act::Floor: return applyAct<Act::Floor>(x, p);
  case Act::Ceil: return applyAct<Act::Ceil>(x, p);
  case Act::Round: return applyAct<Act::Round>(x, p);
  case Act::Sign: return applyAct<Act::Sign>(x, p);
  }
  return x;
}

/// Calls fn(std::integral_constant<Act, A>{}) for the op `a`.
template <class Fn> inline void visitAct(Act a, Fn &&fn) {
  switch (a) {
  case Act::Softplus: fn(std::integral_constant<Act, Act::Softplus>{}); break;
  case Act::LeakyRelu: fn(std::integral_constant<Act, Act::LeakyRelu>{}); break;
  case Act::Elu: fn(std::integral_constant<Act, Act::Elu>{}); break;
  case Act::Selu: fn(std::integral_constant<Act, Act::Selu>{}); break;
  case Act::HardSigmoid: fn(std::integral_constant<Act, Act::HardSigmoid>{}); break;
  case Act::HardSwish: fn(std::integral_constant<Act, Act::HardSwish>{}); break;
  case Act::Floor: fn(std::integral_constant<Act, Act::Floor>{}); break;
  case Act::Ceil: fn(std::integral_constant<Act, Act::Ceil>{}); break;
  case Act::Round: fn(std::integral_constant<Act, Act::Round>{}); break;
  case Act::Sign: fn(std::integral_constant<Act, Act::Sign>{}); break;
  }
}

} // namespace qn::rt
