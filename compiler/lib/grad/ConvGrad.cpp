//===- ConvGrad.cpp - Gradients of a patch-embedding Conv ----------------===//
//
// A 2-D Conv whose kernel equals its stride, without padding, dilation or
// groups (a ViT's patch embedding) is a Linear over non-overlapping
// patches: with the input cut into patches P [B*Hp*Wp, C*kh*kw] and the
// output gradient laid out as G [B*Hp*Wp, O], dW = G^T.P, dB = the sum of
// G, dX = G.W (W as [O, C*kh*kw]) put back in place. Other Convs have no
// rule yet (autodiff names the node).
//
//===----------------------------------------------------------------------===//
#include "GradRules.h"

namespace qn::grad {
namespace {

llvm::Error conv(const GradContext &ctx, const Node &n, GradResult &r) {
  Emitter &e = ctx.e;
  const Value *x = n.inputs[0], *w = n.inputs[1], *b = n.input(2);
  const std::string &gy = ctx.outputGrads[0];
  auto refuse = [&](const llvm::Twine &why) {
    return fail("Conv '" + n.label() + "': gradients exist only for a patch embedding (2-D, "
                "kernel == stride, no padding, dilation or groups): " + why);
  };
  if (!x->hasShape || x->rank() != 4 || !w->hasShape || w->rank() != 4)
    return refuse("not a 2-D Conv of known rank");
  int64_t C = x->dimSize(1), H = x->dimSize(2), W = x->dimSize(3);
  int64_t O = w->dimSize(0), kh = w->dimSize(2), kw = w->dimSize(3);
  std::vector<int64_t> kernel = attrInts(n.proto, "kernel_shape"),
                       strides = attrInts(n.proto, "strides"), pads = attrInts(n.proto, "pads"),
                       dil = attrInts(n.proto, "dilations");
  if (C <= 0 || H <= 0 || W <= 0 || O <= 0 || kh <= 0 || kw <= 0)
    return refuse("its channels, height and width must be static");
  if (attrInt(n.proto, "group", 1) != 1)
    return refuse("group != 1");
  if (strides != std::vector<int64_t>{kh, kw} || (!kernel.empty() && kernel != std::vector<int64_t>{kh, kw}))
    return refuse("its strides are not its kernel");
  for (int64_t p : pads)
    if (p != 0)
      return refuse("it pads");
  for (int64_t d : dil)
    if (d != 1)
      return refuse("it dilates");
  std::string autoPad = "NOTSET";
  for (const auto &a : n.proto.attribute())
    if (a.name() == "auto_pad")
      autoPad = a.s();
  if (autoPad != "NOTSET" && autoPad != "VALID")
    return refuse("auto_pad " + autoPad);
  if (H % kh || W % kw)
    return refuse("the image is not a whole number of patches");
  int64_t Hp = H / kh, Wp = W / kw, K = C * kh * kw;
  // G: [B*Hp*Wp, O].
  std::string g = e.op("Reshape", {e.transpose(gy, {0, 2, 3, 1}, gy + "_nhwc"), e.ints("shape", {-1, O})},
                       gy + "_rows");
  if (ctx.want(1)) {
    std::string p = e.op(
        "Reshape",
        {e.transpose(e.op("Reshape", {x->name, e.ints("shape", {-1, C, Hp, kh, Wp, kw})},
                          x->name + "_tiles"),
                     {0, 2, 4, 1, 3, 5}, x->name + "_tiles_t"),
         e.ints("shape", {-1, K})},
        x->name + "_patches");
    std::string dw = e.op("MatMul", {e.transpose(g, {1, 0}, g + "_T"), p}, w->name + "_grad2d");
    r.set(1, e.op("Reshape", {dw, e.ints("shape", {O, C, kh, kw})}, w->name + "_grad"));
  }
  if (b && ctx.want(2))
    r.set(2, e.reduceSum(gy, {0, 2, 3}, false, b->name + "_grad"));
  if (ctx.want(0)) {
    std::string w2 = e.op("Reshape", {w->name, e.ints("shape", {O, K})}, w->name + "_2d");
    std::string dp = e.op("MatMul", {g, w2}, x->name + "_patches_grad");
    std::string t = e.transpose(
        e.op("Reshape", {dp, e.ints("shape", {-1, Hp, Wp, C, kh, kw})}, x->name + "_tiles_grad_t"),
        {0, 3, 1, 4, 2, 5}, x->name + "_tiles_grad");
    r.set(0, e.op("Reshape", {t, e.ints("shape", {-1, C, H, W})}, x->name + "_grad"));
  }
  return llvm::Error::success();
}

} // namespace

void registerConvGradRules(GradRuleRegistry &r) {
  r.add("Conv", conv, "conv");
}

} // namespace qn::grad
