//===- OpTable.h - The op table (ops/Ops.def) as data -------------*- C++ -*-===//
//
// Shared by the compiler, the runtime and the tests: standard C++ only (no
// LLVM, no ONNX), header-only.
//
//===----------------------------------------------------------------------===//
#pragma once
#include <cstdint>
#include <string_view>
#include <unordered_map>

namespace qn::ops {

enum OpDomain : uint8_t { OD_Onnx, OD_QuintNet };

enum OpKind : uint8_t {
  OK_Unary,
  OK_Binary,
  OK_Compare,
  OK_Logic,
  OK_Variadic,
  OK_Select,
  OK_Normalize,
  OK_Reduce,
  OK_Movement,
  OK_Linear,
  OK_Gather,
  OK_Source,
  OK_Collective,
  OK_Conv,
};

enum OpFlag : uint32_t {
  OF_Fusable = 1u << 0,
  OF_PassesPartial = 1u << 1,
  OF_Random = 1u << 2,
};

enum OpDevice : uint32_t {
  OV_Cpu = 1u << 0,
  OV_Cuda = 1u << 1,
};

struct OpInfo {
  const char *name;
  OpDomain domain;
  OpKind kind;
  int minInputs, maxInputs, minOutputs, maxOutputs;
  uint32_t flags;
  uint32_t devices;

  bool has(OpFlag f) const { return (flags & f) != 0; }
  bool runsOn(OpDevice d) const { return (devices & d) != 0; }
  /// Elementwise with numpy broadcasting over all inputs.
  bool broadcasts() const {
    return kind == OK_Binary || kind == OK_Compare || kind == OK_Logic || kind == OK_Variadic ||
           kind == OK_Select;
  }
};

inline constexpr OpInfo kOps[] = {
#define QN_OP(Name, Domain, Kind, MinIn, MaxIn, MinOut, MaxOut, Flags, Devices)                    \
  {#Name, Domain, Kind, MinIn, MaxIn, MinOut, MaxOut, Flags, Devices},
#include "qn/ops/Ops.def"
};

inline const char *domainName(OpDomain d) { return d == OD_Onnx ? "" : "ai.quintnet"; }

inline const char *kindName(OpKind k) {
  static const char *names[] = {"unary",    "binary",   "compare", "logic",  "variadic",
                                "select",   "normalize", "reduce", "movement", "linear",
                                "gather",   "source",   "collective", "conv"};
  return names[k];
}

/// The op `name` of `domain` ("" and "ai.onnx" are the ONNX domain), or null.
inline const OpInfo *findOp(std::string_view domain, std::string_view name) {
  OpDomain d;
  if (domain.empty() || domain == "ai.onnx")
    d = OD_Onnx;
  else if (domain == "ai.quintnet")
    d = OD_QuintNet;
  else
    return nullptr;
  static const auto *index = [] {
    auto *m = new std::unordered_map<std::string_view, const OpInfo *>[2];
    for (const OpInfo &op : kOps)
      m[op.domain].emplace(op.name, &op);
    return m;
  }();
  auto it = index[d].find(name);
  return it == index[d].end() ? nullptr : it->second;
}

} // namespace qn::ops
