//===- Schemas.cpp - ai.quintnet collective op schemas --------------------===//
//
// Registered with ONNX's schema registry so that the ONNX checker and ONNX
// shape inference can verify rank plans, which contain these nodes.
//
//===----------------------------------------------------------------------===//
#include "qn/compiler/Import.h"

#include <mutex>
#include <onnx/defs/schema.h>
#include <onnx/defs/shape_inference.h>

namespace qn {
namespace {

const std::vector<std::string> &collectiveTypes() {
  static const std::vector<std::string> types = {
      "tensor(float)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)",
      "tensor(int32)", "tensor(int64)"};
  return types;
}

/// AllGather moves bytes: masks and ids (bool, int8, uint8) too.
const std::vector<std::string> &gatherTypes() {
  static const std::vector<std::string> types = [] {
    std::vector<std::string> t = collectiveTypes();
    t.insert(t.end(), {"tensor(bool)", "tensor(int8)", "tensor(uint8)"});
    return t;
  }();
  return types;
}

/// Output shape: the input's, with `axis` left unknown when `unknownAxis`
/// (AllGather and ReduceScatter change it by the world size, which the graph
/// does not carry).
void inferCollective(onnx::InferenceContext &ctx, bool unknownAxis) {
  onnx::propagateElemTypeFromInputToOutput(ctx, 0, 0);
  if (!onnx::hasInputShape(ctx, 0))
    return;
  const auto &in = onnx::getInputShape(ctx, 0);
  auto *out = ctx.getOutputType(0)->mutable_tensor_type()->mutable_shape();
  out->clear_dim();
  int rank = in.dim_size();
  int64_t axis = unknownAxis ? onnx::getAttribute(ctx, "axis", 0) : -1;
  if (unknownAxis && (axis < -rank || axis >= rank))
    fail_shape_inference("axis ", axis, " is out of range for rank ", rank);
  if (axis < 0 && unknownAxis)
    axis += rank;
  for (int i = 0; i < rank; ++i) {
    auto *d = out->add_dim();
    if (i != axis)
      *d = in.dim(i);
  }
}

onnx::OpSchema makeSchema(const char *name, const char *doc, bool hasAxis) {
  onnx::OpSchema s;
  s.SetName(name)
      .SetDomain("ai.quintnet")
      .SinceVersion(1)
      .SetDoc(doc)
      .Input(0, "X", "this rank's tensor", "T")
      .Output(0, "Y", "result", "T")
      .TypeConstraint("T", hasAxis && std::string(name) == "AllGather" ? gatherTypes()
                                                                       : collectiveTypes(),
                      "numeric tensors (AllGather: bool and 8-bit too)");
  if (hasAxis)
    s.Attr("axis", "the axis gathered or scattered", onnx::AttributeProto::INT, true);
  s.TypeAndShapeInferenceFunction(
      [hasAxis](onnx::InferenceContext &ctx) { inferCollective(ctx, hasAxis); });
  return s;
}

} // namespace

void registerQuintNetSchemas() {
  static std::once_flag once;
  std::call_once(once, [] {
    onnx::OpSchemaRegistry::DomainToVersionRange::Instance().AddDomainToVersion(
        "ai.quintnet", 1, 1);
    onnx::OpSchema ar = makeSchema("AllReduce", "Sum over all ranks; every rank gets the sum.", false);
    onnx::OpSchema ag = makeSchema(
        "AllGather", "Concatenation of all ranks' tensors, in rank order, along axis.", true);
    onnx::OpSchema rs = makeSchema(
        "ReduceScatter", "This rank's slice along axis of the sum over all ranks.", true);
    onnx::OpSchemaRegistry::OpSchemaRegisterOnce r1(ar);
    onnx::OpSchemaRegistry::OpSchemaRegisterOnce r2(ag);
    onnx::OpSchemaRegistry::OpSchemaRegisterOnce r3(rs);
  });
}

} // namespace qn
