//===- FuseProgram.h - Fused elementwise programs (host and device) -*- C++ -*-===//
//
// A chain of elementwise ONNX nodes (bias add, GELU as exporters write it,
// residual adds, scaling) evaluated per element in registers: one pass over
// memory instead of one per node. Which ops may join comes from the op table
// (OF_Fusable). Plain C++ shared by the host (planning,
// tests) and nvcc (runtime/lib/cuda/CudaFused.cu): no LLVM, no ONNX here.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cmath>
#include <cstdint>

#include "Activations.h"
#include "FastMath.h" // fastErf, QN_HD

namespace qn::rt {

constexpr int kFuseMaxInputs = 8;
constexpr int kFuseMaxInstrs = 32;

/// Opcodes: loads and constants, the two Gelu forms, the Activations.h ops
/// (FO_Act, the op in FuseInstr::act) and one FO_<Name> per op of the op
/// table (qn/ops/Ops.def), of which evalFused runs those marked OF_Fusable.
enum FuseOp : uint8_t {
  FO_Load,  // r = input[a]
  FO_Const, // r = c
  FO_GeluErf,
  FO_GeluTanh,
  FO_Act, // r = applyAct(act, a, {c, d})
  FO_FirstTableOp,
#define QN_OP(Name, ...) FO_##Name,
#include "qn/ops/Ops.def"
};

/// The opcode of op table entry `index` (qn::ops::kOps[index]).
constexpr FuseOp fuseOpOfTableIndex(int index) {
  return static_cast<FuseOp>(FO_FirstTableOp + 1 + index);
}

/// Instruction i writes register i; a and b name earlier registers (or, for
/// FO_Load, the input slot).
struct FuseInstr {
  uint8_t op = FO_Const;
  uint8_t a = 0, b = 0;
  uint8_t act = 0; // FO_Act: the Act
  float c = 0;     // FO_Const: the value; FO_Act: the first attribute
  float d = 0;     // FO_Act: the second attribute
};

struct FuseProgram {
  int numInstrs = 0;
  int numInputs = 0;
  FuseInstr ins[kFuseMaxInstrs];
};

/// The value of the program's last register, the inputs' element values given.
QN_HD inline float evalFused(const FuseProgram &p, const float *in) {
  float r[kFuseMaxInstrs];
  for (int i = 0; i < p.numInstrs; ++i) {
    const FuseInstr &k = p.ins[i];
    float x = k.op == FO_Load || k.op == FO_Const ? 0.f : r[k.a];
    float y = r[k.b];
    float v;
    switch (k.op) {
    case FO_Load: v = in[k.a]; break;
    case FO_Const: v = k.c; break;
    case FO_Add: v = x + y; break;
    case FO_Sub: v = x - y; break;
    case FO_Mul: v = x * y; break;
    case FO_Div: v = x / y; break;
    case FO_Pow: v = powf(x, y); break;
    // As the CPU kernels: NaN propagates, ties keep the first operand, Relu
    // keeps NaN and -0.
    case FO_Max: v = (x != x || y != y) ? x + y : (y > x ? y : x); break;
    case FO_Min: v = (x != x || y != y) ? x + y : (y < x ? y : x); break;
    case FO_Relu: v = x < 0.f ? 0.f : x; break;
    case FO_Neg: v = -x; break;
    case FO_Abs: v = fabsf(x); break;
    case FO_Tanh: v = tanhf(x); break;
    case FO_Sigmoid: { // the CPU kernel's form: no overflow for large |x|
      float e = expf(x >= 0.f ? -x : x);
      v = x >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);
      break;
    }
    case FO_Erf: v = fastErf(x); break; // the Erf kernels' (CPU and CUDA)
    case FO_Exp: v = expf(x); break;
    case FO_Log: v = logf(x); break;
    case FO_Sqrt: v = sqrtf(x); break;
    case FO_Reciprocal: v = 1.f / x; break;
    case FO_Sin: v = sinf(x); break;
    case FO_Cos: v = cosf(x); break;
    case FO_GeluErf: v = 0.5f * x * (1.f + fastErf(x * 0.70710678118654752f)); break;
    case FO_Act: v = applyActDyn(static_cast<Act>(k.act), x, ActParams{k.c, k.d}); break;
    case FO_GeluTanh:
      v = 0.5f * x * (1.f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
      break;
    default: v = 0.f; break;
    }
    r[i] = v;
  }
  return p.numInstrs ? r[p.numInstrs - 1] : 0.f;
}

} // namespace qn::rt
