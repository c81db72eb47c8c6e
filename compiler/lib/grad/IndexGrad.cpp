//===- IndexGrad.cpp - Gradients of Gather, Split, Concat -----------------===//
//
// An embedding lookup Gather(table, ids) on axis 0 scatters its gradient
// back with ScatterND(reduction = add) into zeros shaped like the table
// (ids wrapped like Gather's negative ids); a Gather of one constant index
// on another axis (a class-token pick) broadcasts the gradient against a
// one-hot vector along that axis. Split's input gradient is the Concat of
// its outputs' gradients (zeros for an unused output); Concat's are Slices
// of its output's gradient along the axis, at the inputs' offsets (static,
// or summed at run time from the inputs' shapes); Slice's is its output's
// gradient padded back with zeros by Concats.
//
//===----------------------------------------------------------------------===//
#include "GradRules.h"

#include "../ExporterIdioms.h"

#include <algorithm>

namespace qn::grad {
namespace {

/// Zeros of the shape of `like`, of the emitter's element type: a constant
/// shape where it is static (a sharded table's Shape would need it whole),
/// else read at run time.
std::string zerosLike(Emitter &e, const Value *like, llvm::StringRef base) {
  onnx::AttributeProto value;
  value.set_name("value");
  value.set_type(onnx::AttributeProto::TENSOR);
  *value.mutable_t() = e.typed("", {1}, {0.0});
  bool known = like->hasShape && llvm::all_of(like->shape, [](const Dim &d) { return d.known(); });
  std::string shape;
  if (known) {
    std::vector<int64_t> dims;
    for (const Dim &d : like->shape)
      dims.push_back(d.size);
    shape = e.ints(like->name + "_shape", dims);
  } else {
    shape = e.op("Shape", {like->name}, like->name + "_shape");
  }
  return e.op("ConstantOfShape", {shape}, base, {value});
}

llvm::Error gather(const GradContext &ctx, const Node &n, GradResult &r) {
  if (!ctx.want(0))
    return llvm::Error::success();
  Emitter &e = ctx.e;
  const Value *data = n.inputs[0], *ids = n.inputs[1];
  const std::string &gy = ctx.outputGrads[0];
  if (!data->hasShape)
    return fail("Gather '" + n.label() + "': the rank of '" + data->name + "' is not known");
  int64_t axis = normAxis(attrInt(n.proto, "axis", 0), data->rank());
  int64_t index = 0;
  if (axis != 0) {
    // One constant index along `axis`: gy broadcast against a one-hot.
    int64_t L = data->dimSize(axis);
    if (!constantScalar(ids, index) || L <= 0 || (ids->hasShape && ids->rank() != 0))
      return fail("Gather '" + n.label() +
                  "': gradients of a Gather on an axis other than 0 need one constant scalar "
                  "index and a static axis size");
    if (index < 0)
      index += L;
    std::vector<int64_t> shape(data->rank(), 1);
    shape[axis] = L;
    std::vector<double> hot(L, 0.0);
    hot[index] = 1.0;
    std::string g = e.unsqueeze(gy, {axis}, gy + "_unsq");
    r.set(0, e.op("Mul", {g, e.constant(e.typed("onehot", shape, hot))}, data->name + "_grad"));
    return llvm::Error::success();
  }
  if (ctx.g.opsetVersion() < 16)
    return fail("Gather '" + n.label() +
                "': the embedding gradient needs ScatterND with reduction (opset 16 or newer)");
  // Negative ids count from the end, as Gather reads them.
  std::string rows =
      data->dimSize(0) > 0
          ? e.ints(data->name + "_rows", {data->dimSize(0)})
          : e.op("Gather", {e.op("Shape", {data->name}, data->name + "_shape"),
                            e.ints("axis0", {0})},
                 data->name + "_rows");
  std::string neg = e.op("Less", {ids->name, e.ints("zero", {0})}, ids->name + "_negative");
  std::string wrapped = e.op("Add", {ids->name, rows}, ids->name + "_wrapped");
  std::string norm = e.op("Where", {neg, wrapped, ids->name}, ids->name + "_norm");
  std::string idx = e.unsqueeze(norm, {-1}, ids->name + "_nd");
  r.set(0, e.op("ScatterND", {zerosLike(e, data, data->name + "_zeros"), idx, gy},
                data->name + "_grad", {sattr("reduction", "add")}));
  return llvm::Error::success();
}

llvm::Error split(const GradContext &ctx, const Node &n, GradResult &r) {
  if (!ctx.want(0))
    return llvm::Error::success();
  Emitter &e = ctx.e;
  const Value *x = n.inputs[0];
  if (!x->hasShape)
    return fail("Split '" + n.label() + "': the rank of '" + x->name + "' is not known");
  int64_t axis = normAxis(attrInt(n.proto, "axis", 0), x->rank());
  std::vector<std::string> parts;
  for (unsigned i = 0; i < n.outputs.size(); ++i) {
    if (!ctx.outputGrads[i].empty())
      parts.push_back(ctx.outputGrads[i]);
    else if (n.outputs[i])
      parts.push_back(zerosLike(e, n.outputs[i], n.outputs[i]->name + "_zero_grad"));
    else
      return fail("Split '" + n.label() + "': an omitted output needs its gradient");
  }
  r.set(0, e.op("Concat", parts, x->name + "_grad", {iattr("axis", axis)}));
  return llvm::Error::success();
}

llvm::Error concat(const GradContext &ctx, const Node &n, GradResult &r) {
  Emitter &e = ctx.e;
  const Value *y = n.outputs[0];
  if (!y->hasShape)
    return fail("Concat '" + n.label() + "': the rank of its output is not known");
  int64_t axis = normAxis(attrInt(n.proto, "axis", 0), y->rank());
  // Offsets along the axis: constants while the sizes are static, else
  // run-time sums of the inputs' sizes (a class token's Expand whose shape
  // is computed at run time).
  int64_t offset = 0;
  std::string runtimeOffset; // set once a size is only known at run time
  for (unsigned i = 0; i < n.inputs.size(); ++i) {
    const Value *x = n.inputs[i];
    if (!x)
      continue;
    int64_t size = x->hasShape ? x->dimSize(axis) : -1;
    std::string start, end;
    if (runtimeOffset.empty() && size >= 0) {
      start = e.ints("starts", {offset});
      end = e.ints("ends", {offset + size});
      offset += size;
    } else {
      std::string sz =
          size >= 0 ? e.ints("size", {size})
                    : e.op("Gather", {e.op("Shape", {x->name}, x->name + "_shape"), e.ints("axis", {axis})},
                           x->name + "_size", {iattr("axis", 0)});
      start = runtimeOffset.empty() ? e.ints("starts", {offset}) : runtimeOffset;
      end = e.op("Add", {start, sz}, x->name + "_end");
      runtimeOffset = end;
    }
    if (ctx.want(i))
      r.set(i, e.op("Slice", {ctx.outputGrads[0], start, end, e.ints("axes", {axis})},
                    x->name + "_grad"));
  }
  return llvm::Error::success();
}

/// Slice with unit steps, constant axes of static size and bounds known at
/// compile time: the gradient is the output's, padded with zeros back to the
/// input's extent one axis at a time by a Concat. The zero blocks are
/// slices of the input times 0, so they have the gradient's shape on every
/// other axis (dims known only at run time included) and its sharding: a
/// rotary embedding's halves on head-sharded activations stay local.
llvm::Error slice(const GradContext &ctx, const Node &n, GradResult &r) {
  if (!ctx.want(0))
    return llvm::Error::success();
  Emitter &e = ctx.e;
  const Value *x = n.inputs[0];
  if (!x->hasShape)
    return fail("Slice '" + n.label() + "': the rank of '" + x->name + "' is not known");
  const int64_t rank = x->rank();
  // Bounds: constants, or computed from the input's own shape (torch's
  // chunk, Llama's rotate_half) and evaluated with its static sizes.
  std::vector<int64_t> axes, starts;
  if (n.input(3)) {
    if (!constantInts(n.input(3), axes))
      return fail("Slice '" + n.label() + "': gradients need constant axes");
  } else if (constantInts(n.input(1), starts)) {
    for (size_t i = 0; i < starts.size(); ++i)
      axes.push_back(static_cast<int64_t>(i));
  } else {
    return fail("Slice '" + n.label() + "': gradients need constant axes");
  }
  struct Cut {
    int64_t axis, begin, end, size;
  };
  std::vector<Cut> cuts;
  for (int64_t axis : axes) {
    int64_t a = normAxis(axis, rank), D = x->dimSize(a), b = 0, en = 0;
    if (D < 0)
      return fail("Slice '" + n.label() + "': gradients need the size of axis " +
                  llvm::Twine(a) + " of '" + x->name + "' at compile time");
    if (!idioms::sliceRange(n, a, D, b, en))
      return fail("Slice '" + n.label() + "': gradients need unit steps and bounds known at "
                  "compile time (constants, or computed from the input's static shape)");
    cuts.push_back({a, b, std::max(b, en), D});
  }
  std::string g = ctx.outputGrads[0];
  for (size_t k = 0; k < cuts.size(); ++k) {
    const Cut &c = cuts[k];
    // x sliced like the gradient so far: [from, to) on this axis, the later
    // axes still cut, the earlier ones already whole.
    auto zeros = [&](int64_t from, int64_t to) {
      std::vector<int64_t> st{from}, en{to}, ax{c.axis};
      for (size_t j = k + 1; j < cuts.size(); ++j) {
        st.push_back(cuts[j].begin);
        en.push_back(cuts[j].end);
        ax.push_back(cuts[j].axis);
      }
      std::string part = e.op("Slice", {x->name, e.ints("starts", st), e.ints("ends", en),
                                        e.ints("axes", ax)},
                              x->name + "_pad_src");
      return e.op("Mul", {part, e.scalar("zero", 0.0)}, x->name + "_pad_zeros");
    };
    std::vector<std::string> parts;
    if (c.begin > 0)
      parts.push_back(zeros(0, c.begin));
    parts.push_back(g);
    if (c.end < c.size)
      parts.push_back(zeros(c.end, c.size));
    if (parts.size() > 1)
      g = e.op("Concat", parts, x->name + "_grad_pad", {iattr("axis", c.axis)});
  }
  r.set(0, g);
  return llvm::Error::success();
}

} // namespace

void registerIndexGradRules(GradRuleRegistry &r) {
  r.add("Gather", gather, "index");
  r.add("Split", split, "index");
  r.add("Concat", concat, "index");
  r.add("Slice", slice, "index");
}

} // namespace qn::grad
