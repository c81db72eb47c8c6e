//===- ExporterIdioms.cpp - The shape chains exporters write --------------===//
#include "ExporterIdioms.h"

#include <algorithm>
#include <climits>
#include <cstring>

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringSet.h"

namespace qn::idioms {

bool isShapeStep(llvm::StringRef op) {
  // Reshape: of a one-element entry it changes only the rank (the dynamo
  // exporter's Reshape(bsz * heads, [-1]) before a Concat).
  return op == "Unsqueeze" || op == "Squeeze" || op == "Cast" || op == "Reshape";
}

ShapeEntry traceShapeEntry(const Value *v) {
  ShapeEntry e;
  for (int depth = 0; v && v->producer && depth < 8; ++depth) {
    const Node *p = v->producer;
    llvm::StringRef op = p->opType();
    int64_t index = 0;
    if (isShapeStep(op)) {
      v = p->inputs[0];
    } else if (op == "Mul" && p->inputs.size() == 2 && p->inputs[1] && p->inputs[1]->constant) {
      int64_t c = 0;
      e.factor = constantScalar(p->inputs[1], c) && e.factor ? e.factor * c : 0;
      v = p->inputs[0];
    } else if (op == "Shape" && p->inputs[0] && p->inputs[0]->hasShape &&
               p->proto.attribute_size() > 0) {
      // Shape <start = i, end = i + 1> (opset 15+; the dynamo exporter's
      // read of one dim).
      const Value *t = p->inputs[0];
      auto [start, end] = shapeRange(*p, t->rank());
      if (end != start + 1)
        return {};
      e.tensor = t;
      e.index = start;
      return e;
    } else if ((op == "Gather" || op == "Slice") && constantScalar(p->input(1), index) &&
               p->inputs[0] && p->inputs[0]->producer &&
               p->inputs[0]->producer->opType() == "Shape") {
      const Node *shape = p->inputs[0]->producer;
      const Value *t = shape->inputs[0];
      if (!t || !t->hasShape)
        return {};
      // The index counts in the Shape's output: dims [start, end) of t.
      auto [start, end] = shapeRange(*shape, t->rank());
      if (index < 0)
        index += end - start;
      if (index < 0 || index >= end - start)
        return {};
      e.tensor = t;
      e.index = start + index;
      return e;
    } else {
      return {};
    }
  }
  return {};
}

bool traceShapeProduct(const Value *v, ShapeEntry &a, ShapeEntry &b) {
  for (int depth = 0; v && v->producer && depth < 8; ++depth) {
    const Node *p = v->producer;
    llvm::StringRef op = p->opType();
    if (isShapeStep(op)) {
      v = p->inputs[0];
      continue;
    }
    if (op != "Mul" || p->inputs.size() != 2 || !p->inputs[0] || !p->inputs[1] ||
        p->inputs[0]->constant || p->inputs[1]->constant)
      return false;
    a = traceShapeEntry(p->inputs[0]);
    b = traceShapeEntry(p->inputs[1]);
    return a.tensor && b.tensor;
  }
  return false;
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
    // A ConstantOfShape whose shape holds single entries is a target too
    // (GPT-NeoX's zeros for baddbmm): its rule places the output where
    // the entries it reads are local.
    if (op == "ConstantOfShape" && extracted && user->outputs[0] &&
        !feedsOnlyTargets(user->outputs[0], depth + 1, extracted))
      continue;
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

bool feedsOnlyShapeTargetPieces(const Value *v) { return feedsOnlyTargets(v, 0, true); }

bool traceShapeRange(const Value *v, const Value *&tensor, int64_t &first, int64_t &len) {
  if (!v || !v->producer || !v->producer->domain().empty())
    return false;
  const Node *p = v->producer;
  int64_t sliceStart = 0, sliceEnd = INT64_MAX;
  if (p->opType() == "Slice") {
    int64_t axis = 0, step = 1;
    if (p->inputs.size() < 3 || !constantScalar(p->input(1), sliceStart) ||
        !constantScalar(p->input(2), sliceEnd) ||
        (p->input(3) && (!constantScalar(p->input(3), axis) || (axis != 0 && axis != -1))) ||
        (p->input(4) && (!constantScalar(p->input(4), step) || step != 1)))
      return false;
    if (!p->inputs[0] || !p->inputs[0]->producer)
      return false;
    p = p->inputs[0]->producer;
  }
  if (p->opType() != "Shape" || !p->domain().empty() || !p->inputs[0] ||
      !p->inputs[0]->hasShape)
    return false;
  const Value *t = p->inputs[0];
  auto clampTo = [](int64_t x, int64_t n) {
    return std::clamp(x < 0 ? x + n : x, int64_t(0), n);
  };
  auto [start, end] = shapeRange(*p, t->rank());
  const int64_t n = std::max(end - start, int64_t(0));
  int64_t s = clampTo(sliceStart, n), e = clampTo(sliceEnd, n);
  if (e <= s)
    return false;
  tensor = t;
  first = start + s;
  len = e - s;
  return true;
}

} // namespace qn::idioms

namespace qn::idioms {
namespace {

constexpr int64_t kUnknown = INT64_MIN; // an entry read from an unknown dim

bool isIntType(int32_t t) {
  return t == onnx::TensorProto::INT64 || t == onnx::TensorProto::INT32;
}

bool tensorInts(const onnx::TensorProto &t, std::vector<int64_t> &out) {
  out.clear();
  if (t.data_type() == onnx::TensorProto::INT64) {
    if (t.has_raw_data()) {
      const std::string &raw = t.raw_data();
      out.resize(raw.size() / sizeof(int64_t));
      if (!out.empty())
        std::memcpy(out.data(), raw.data(), out.size() * sizeof(int64_t));
    } else {
      out.assign(t.int64_data().begin(), t.int64_data().end());
    }
  } else if (t.data_type() == onnx::TensorProto::INT32) {
    if (t.has_raw_data()) {
      const std::string &raw = t.raw_data();
      std::vector<int32_t> v(raw.size() / sizeof(int32_t));
      if (!v.empty())
        std::memcpy(v.data(), raw.data(), v.size() * sizeof(int32_t));
      out.assign(v.begin(), v.end());
    } else {
      out.assign(t.int32_data().begin(), t.int32_data().end());
    }
  } else {
    return false;
  }
  return static_cast<int64_t>(out.size()) == tensorNumElements(t);
}

/// evalShapeInts, with the entries read from unknown dims kept as kUnknown
/// (a later Gather may drop them).
bool evalInts(const Value *v, const Value *x, int64_t axis, int64_t size,
              std::vector<int64_t> &out, int depth) {
  if (!v || depth > 24)
    return false;
  if (v->constant)
    return tensorInts(*v->constant, out);
  const Node *p = v->producer;
  if (!p || !p->domain().empty() || !isIntType(v->elemType) || p->outputs.empty() ||
      p->outputs[0] != v)
    return false;
  llvm::StringRef op = p->opType();
  auto in = [&](unsigned i, std::vector<int64_t> &o) {
    return evalInts(p->input(i), x, axis, size, o, depth + 1);
  };
  if (op == "Shape") {
    if (p->inputs[0] != x || !x->hasShape)
      return false;
    auto [start, end] = shapeRange(*p, x->rank());
    out.clear();
    for (int64_t i = start; i < end; ++i)
      out.push_back(i == axis ? size : x->shape[i].known() ? x->shape[i].size : kUnknown);
    return true;
  }
  if (op == "Squeeze" || op == "Unsqueeze" || op == "Reshape" || op == "Identity")
    return in(0, out);
  if (op == "Cast")
    return isIntType(static_cast<int32_t>(attrInt(p->proto, "to", 0))) && in(0, out);
  if (op == "Gather") {
    std::vector<int64_t> data, idx;
    if (attrInt(p->proto, "axis", 0) != 0 || !in(0, data) || !in(1, idx))
      return false;
    out.clear();
    for (int64_t i : idx) {
      if (i < 0)
        i += static_cast<int64_t>(data.size());
      if (i < 0 || i >= static_cast<int64_t>(data.size()))
        return false;
      out.push_back(data[i]);
    }
    return true;
  }
  if (op == "Slice") { // of a 1-D shape vector, step 1
    std::vector<int64_t> data, st, en, ax, steps;
    if (!in(0, data) || !in(1, st) || !in(2, en) || st.size() != 1 || en.size() != 1)
      return false;
    if (p->input(3) && (!in(3, ax) || ax.size() != 1 || (ax[0] != 0 && ax[0] != -1)))
      return false;
    if (p->input(4) && (!in(4, steps) || steps.size() != 1 || steps[0] != 1))
      return false;
    int64_t n = static_cast<int64_t>(data.size()), s = st[0], e = en[0];
    if (s == kUnknown || e == kUnknown)
      return false;
    s = std::clamp(s < 0 ? s + n : s, int64_t(0), n);
    e = std::clamp(e < 0 ? e + n : e, int64_t(0), n);
    out.assign(data.begin() + s, data.begin() + std::max(s, e));
    return true;
  }
  if (op == "Concat") {
    out.clear();
    for (unsigned i = 0; i < p->inputs.size(); ++i) {
      std::vector<int64_t> piece;
      if (!in(i, piece))
        return false;
      out.insert(out.end(), piece.begin(), piece.end());
    }
    return true;
  }
  if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") {
    std::vector<int64_t> a, b;
    if (!in(0, a) || !in(1, b) || a.empty() || b.empty() ||
        (a.size() != b.size() && a.size() != 1 && b.size() != 1))
      return false;
    size_t n = std::max(a.size(), b.size());
    out.assign(n, kUnknown);
    for (size_t i = 0; i < n; ++i) {
      int64_t l = a[a.size() == 1 ? 0 : i], r = b[b.size() == 1 ? 0 : i];
      if (l == kUnknown || r == kUnknown)
        continue;
      if (op == "Div" && r == 0)
        return false;
      out[i] = op == "Add" ? l + r : op == "Sub" ? l - r : op == "Mul" ? l * r : l / r;
    }
    return true;
  }
  return false;
}

/// The ops evalInts follows from a shape read to a Slice bound.
bool isShapeArith(llvm::StringRef op) {
  static const llvm::StringSet<> ops = {"Gather", "Slice", "Squeeze", "Unsqueeze",
                                        "Reshape", "Cast",  "Identity", "Concat",
                                        "Add",     "Sub",   "Mul",      "Div"};
  return ops.contains(op);
}

bool slicesOnly(const Value *v, const Value *x, llvm::SmallVectorImpl<const Node *> &slices,
                int depth) {
  if (!v || depth > 24 || v->uses.empty() || v->isGraphOutput)
    return false;
  for (const auto &[user, idx] : v->uses) {
    if (!user->domain().empty())
      return false;
    if (user->opType() == "Slice" && (idx == 1 || idx == 2) && user->inputs[0] == x) {
      if (!llvm::is_contained(slices, user))
        slices.push_back(user);
      continue;
    }
    if (!isShapeArith(user->opType()) || (user->opType() == "Slice" && idx != 0) ||
        (user->opType() == "Reshape" && idx != 0) || user->outputs.size() != 1 ||
        !slicesOnly(user->outputs[0], x, slices, depth + 1))
      return false;
  }
  return true;
}

} // namespace

bool evalShapeInts(const Value *v, const Value *x, int64_t axis, int64_t size,
                   std::vector<int64_t> &out) {
  if (!evalInts(v, x, axis, size, out, 0))
    return false;
  return !llvm::is_contained(out, kUnknown);
}

bool sliceRange(const Node &n, int64_t axis, int64_t size, int64_t &start, int64_t &end,
                size_t *entry) {
  const Value *x = n.input(0);
  if (n.opType() != "Slice" || !n.domain().empty() || !x || !x->hasShape || !n.input(1) ||
      !n.input(2))
    return false;
  int64_t rank = x->rank();
  std::vector<int64_t> starts, ends, axes, steps;
  if (!evalInts(n.input(1), x, axis, size, starts, 0) ||
      !evalInts(n.input(2), x, axis, size, ends, 0) || starts.size() != ends.size())
    return false;
  if (n.input(3)) {
    if (!n.input(3)->constant || !tensorInts(*n.input(3)->constant, axes))
      return false;
  } else {
    for (size_t i = 0; i < starts.size(); ++i)
      axes.push_back(static_cast<int64_t>(i));
  }
  if (axes.size() != starts.size())
    return false;
  size_t pos = axes.size();
  for (size_t i = 0; i < axes.size(); ++i)
    if ((axes[i] < 0 ? axes[i] + rank : axes[i]) == axis)
      pos = i;
  if (pos == axes.size())
    return false;
  if (n.input(4) && (!n.input(4)->constant || !tensorInts(*n.input(4)->constant, steps) ||
                     steps.size() != axes.size() || steps[pos] != 1))
    return false;
  if (entry)
    *entry = pos;
  start = starts[pos];
  end = ends[pos];
  if (start == kUnknown || end == kUnknown)
    return false;
  start = std::clamp(start < 0 ? start + size : start, int64_t(0), size);
  end = std::clamp(end < 0 ? end + size : end, int64_t(0), size);
  return true;
}

bool feedsOnlySliceBounds(const Value *v, const Value *x,
                          llvm::SmallVectorImpl<const Node *> &slices) {
  return slicesOnly(v, x, slices, 0);
}

} // namespace qn::idioms
