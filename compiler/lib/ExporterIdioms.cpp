//===- ExporterIdioms.cpp - The shape chains exporters write --------------===//
#include "ExporterIdioms.h"

#include "llvm/ADT/StringSet.h"

namespace qn::idioms {

ShapeEntry traceShapeEntry(const Value *v) {
  ShapeEntry e;
  for (int depth = 0; v && v->producer && depth < 8; ++depth) {
    const Node *p = v->producer;
    llvm::StringRef op = p->opType();
    int64_t index = 0;
    if (op == "Unsqueeze" || op == "Squeeze" || op == "Cast") {
      v = p->inputs[0];
    } else if (op == "Mul" && p->inputs.size() == 2 && p->inputs[1] && p->inputs[1]->constant) {
      int64_t c = 0;
      e.factor = constantScalar(p->inputs[1], c) && e.factor ? e.factor * c : 0;
      v = p->inputs[0];
    } else if ((op == "Gather" || op == "Slice") && constantScalar(p->input(1), index) &&
               p->inputs[0] && p->inputs[0]->producer &&
               p->inputs[0]->producer->opType() == "Shape") {
      const Value *t = p->inputs[0]->producer->inputs[0];
      if (!t || !t->hasShape)
        return {};
      if (index < 0)
        index += t->rank();
      e.tensor = t;
      e.index = index;
      return e;
    } else {
      return {};
    }
  }
  return {};
}

const Value *unwrapShapeTarget(const Value *v) {
  for (int depth = 0; v && v->producer && depth < 4; ++depth) {
    const Node *p = v->producer;
    if (p->opType() == "Where" && p->inputs.size() == 3 && p->inputs[2] && p->inputs[0] &&
        p->inputs[0]->producer && p->inputs[0]->producer->opType() == "Equal" &&
        p->inputs[0]->producer->inputs[0] == p->inputs[2])
      v = p->inputs[2];
    else if (p->opType() == "Reshape" && p->inputs[0] && p->inputs[0]->producer &&
             p->inputs[0]->producer->opType() == "Concat" && p->input(1) &&
             p->input(1)->constant)
      v = p->inputs[0];
    else
      break;
  }
  return v;
}

const Node *targetConcat(const Value *v) {
  const Value *inner = unwrapShapeTarget(v);
  const Node *c = inner ? inner->producer : nullptr;
  return c && c->opType() == "Concat" ? c : nullptr;
}

static bool feedsOnlyTargets(const Value *v, int depth, bool extracted) {
  static const llvm::StringSet<> through = {"Slice", "Gather", "Squeeze", "Unsqueeze", "Cast",
                                            "Concat", "Mul", "Reshape", "Equal", "Where",
                                            "ConstantOfShape", "Shape"};
  if (depth > 10 || v->uses.empty() || v->isGraphOutput)
    return false;
  for (const auto &[user, idx] : v->uses) {
    llvm::StringRef op = user->opType();
    if ((op == "Reshape" || op == "Expand") && idx == 1) {
      if (!extracted)
        return false;
      continue;
    }
    if (!through.contains(op) || !user->outputs[0])
      return false;
    const Value *out = user->outputs[0];
    bool single = (op == "Gather" || op == "Slice") && idx == 0 && out->hasShape &&
                  out->numElements() == 1;
    if (!feedsOnlyTargets(out, depth + 1, extracted || single))
      return false;
  }
  return true;
}

bool feedsOnlyShapeTargets(const Value *v) { return feedsOnlyTargets(v, 0, false); }

} // namespace qn::idioms
