//===- ElementwiseGrad.cpp - Gradients of the elementwise ops -------------===//
//
// Binary ops give each input's gradient in the output's shape and leave the
// broadcasting reduction to the engine (GradResult::unbroadcast). Unary ops
// reuse the forward output where the derivative is a function of it (Tanh,
// Sigmoid, Exp, Sqrt) so the backward recomputes nothing.
//
//===----------------------------------------------------------------------===//
#include "GradRules.h"

namespace qn::grad {
namespace {

const std::string &gyOf(const GradContext &ctx) { return ctx.outputGrads[0]; }

llvm::Error add(const GradContext &ctx, const Node &n, GradResult &r) {
  for (unsigned i = 0; i < 2; ++i)
    if (ctx.want(i))
      r.set(i, gyOf(ctx), true);
  return llvm::Error::success();
}

llvm::Error sub(const GradContext &ctx, const Node &n, GradResult &r) {
  if (ctx.want(0))
    r.set(0, gyOf(ctx), true);
  if (ctx.want(1))
    r.set(1, ctx.e.op("Neg", {gyOf(ctx)}, n.inputs[1]->name + "_grad"), true);
  return llvm::Error::success();
}

llvm::Error mul(const GradContext &ctx, const Node &n, GradResult &r) {
  for (unsigned i = 0; i < 2; ++i)
    if (ctx.want(i))
      r.set(i, ctx.e.op("Mul", {gyOf(ctx), n.inputs[1 - i]->name}, n.inputs[i]->name + "_grad"),
            true);
  return llvm::Error::success();
}

llvm::Error div(const GradContext &ctx, const Node &n, GradResult &r) {
  Emitter &e = ctx.e;
  const std::string &b = n.inputs[1]->name, &y = n.outputs[0]->name;
  if (ctx.want(0))
    r.set(0, e.op("Div", {gyOf(ctx), b}, n.inputs[0]->name + "_grad"), true);
  if (ctx.want(1)) // d(a/b)/db = -(a/b)/b = -y/b
    r.set(1,
          e.op("Neg", {e.op("Mul", {gyOf(ctx), e.op("Div", {y, b}, y + "_over_b")}, y + "_gb")},
               b + "_grad"),
          true);
  return llvm::Error::success();
}

llvm::Error pass(const GradContext &ctx, const Node &n, GradResult &r) {
  if (ctx.want(0))
    r.set(0, gyOf(ctx));
  return llvm::Error::success();
}

llvm::Error neg(const GradContext &ctx, const Node &n, GradResult &r) {
  if (ctx.want(0))
    r.set(0, ctx.e.op("Neg", {gyOf(ctx)}, n.inputs[0]->name + "_grad"));
  return llvm::Error::success();
}

llvm::Error cast(const GradContext &ctx, const Node &n, GradResult &r) {
  const Value *x = n.inputs[0];
  if (!ctx.want(0))
    return llvm::Error::success();
  if (x->elemType != onnx::TensorProto::FLOAT && x->elemType != onnx::TensorProto::DOUBLE &&
      x->elemType != onnx::TensorProto::FLOAT16)
    return llvm::Error::success(); // from an integer: no gradient
  r.set(0, ctx.e.op("Cast", {gyOf(ctx)}, x->name + "_grad", {iattr("to", x->elemType)}));
  return llvm::Error::success();
}

/// gy * f where f is built from the forward values.
llvm::Error scaleBy(const GradContext &ctx, const Node &n, GradResult &r,
                    const std::string &factor) {
  r.set(0, ctx.e.op("Mul", {gyOf(ctx), factor}, n.inputs[0]->name + "_grad"));
  return llvm::Error::success();
}

llvm::Error relu(const GradContext &ctx, const Node &n, GradResult &r) {
  if (!ctx.want(0))
    return llvm::Error::success();
  Emitter &e = ctx.e;
  const std::string &y = n.outputs[0]->name;
  std::string mask = e.op("Greater", {y, e.scalar("zero", 0.0)}, y + "_positive");
  return scaleBy(ctx, n, r, e.op("Cast", {mask}, y + "_mask", {iattr("to", e.type())}));
}

llvm::Error tanh(const GradContext &ctx, const Node &n, GradResult &r) {
  if (!ctx.want(0))
    return llvm::Error::success();
  Emitter &e = ctx.e;
  const std::string &y = n.outputs[0]->name;
  return scaleBy(ctx, n, r,
                 e.op("Sub", {e.scalar("one", 1.0), e.op("Mul", {y, y}, y + "_sq")}, y + "_dtanh"));
}

llvm::Error sigmoid(const GradContext &ctx, const Node &n, GradResult &r) {
  if (!ctx.want(0))
    return llvm::Error::success();
  Emitter &e = ctx.e;
  const std::string &y = n.outputs[0]->name;
  std::string oneMinus = e.op("Sub", {e.scalar("one", 1.0), y}, y + "_1m");
  return scaleBy(ctx, n, r, e.op("Mul", {y, oneMinus}, y + "_dsigmoid"));
}

llvm::Error exp(const GradContext &ctx, const Node &n, GradResult &r) {
  if (!ctx.want(0))
    return llvm::Error::success();
  return scaleBy(ctx, n, r, n.outputs[0]->name);
}

llvm::Error log(const GradContext &ctx, const Node &n, GradResult &r) {
  if (ctx.want(0))
    r.set(0, ctx.e.op("Div", {gyOf(ctx), n.inputs[0]->name}, n.inputs[0]->name + "_grad"));
  return llvm::Error::success();
}

llvm::Error sqrt(const GradContext &ctx, const Node &n, GradResult &r) {
  if (!ctx.want(0))
    return llvm::Error::success();
  Emitter &e = ctx.e;
  const std::string &y = n.outputs[0]->name;
  std::string twoY = e.op("Mul", {y, e.scalar("two", 2.0)}, y + "_x2");
  r.set(0, e.op("Div", {gyOf(ctx), twoY}, n.inputs[0]->name + "_grad"));
  return llvm::Error::success();
}

llvm::Error reciprocal(const GradContext &ctx, const Node &n, GradResult &r) {
  if (!ctx.want(0))
    return llvm::Error::success();
  Emitter &e = ctx.e;
  const std::string &y = n.outputs[0]->name;
  return scaleBy(ctx, n, r, e.op("Neg", {e.op("Mul", {y, y}, y + "_sq")}, y + "_drecip"));
}

llvm::Error erf(const GradContext &ctx, const Node &n, GradResult &r) {
  if (!ctx.want(0))
    return llvm::Error::success();
  Emitter &e = ctx.e;
  const std::string &x = n.inputs[0]->name;
  // d erf(x) = 2/sqrt(pi) exp(-x^2)
  std::string ex = e.op("Exp", {e.op("Neg", {e.op("Mul", {x, x}, x + "_sq")}, x + "_nsq")}, x + "_gauss");
  return scaleBy(ctx, n, r,
                 e.op("Mul", {ex, e.scalar("two_over_sqrt_pi", 1.1283791670955126)}, x + "_derf"));
}

llvm::Error sin(const GradContext &ctx, const Node &n, GradResult &r) {
  if (!ctx.want(0))
    return llvm::Error::success();
  const std::string &x = n.inputs[0]->name;
  return scaleBy(ctx, n, r, ctx.e.op("Cos", {x}, x + "_dsin"));
}

llvm::Error cos(const GradContext &ctx, const Node &n, GradResult &r) {
  if (!ctx.want(0))
    return llvm::Error::success();
  Emitter &e = ctx.e;
  const std::string &x = n.inputs[0]->name;
  return scaleBy(ctx, n, r, e.op("Neg", {e.op("Sin", {x}, x + "_sin")}, x + "_dcos"));
}

llvm::Error pow(const GradContext &ctx, const Node &n, GradResult &r) {
  Emitter &e = ctx.e;
  const Value *x = n.inputs[0], *p = n.inputs[1];
  if (ctx.want(1)) // d x^p / dp = x^p ln x
    r.set(1,
          e.op("Mul", {gyOf(ctx), e.op("Mul", {n.outputs[0]->name,
                                               e.op("Log", {x->name}, x->name + "_log")},
                                       x->name + "_dpow_dp")},
               p->name + "_grad"),
          true);
  if (!ctx.want(0))
    return llvm::Error::success();
  // d x^p = p x^(p-1)
  std::string pm1 = e.op("Sub", {p->name, e.op("Cast", {e.scalar("one", 1.0)}, "one_as_p",
                                               {iattr("to", p->elemType)})},
                         p->name + "_m1");
  std::string d = e.op("Mul", {e.op("Cast", {p->name}, p->name + "_f", {iattr("to", x->elemType)}),
                               e.op("Pow", {x->name, pm1}, x->name + "_pm1")},
                       x->name + "_dpow");
  r.set(0, e.op("Mul", {gyOf(ctx), d}, x->name + "_grad"), true);
  return llvm::Error::success();
}

llvm::Error where(const GradContext &ctx, const Node &n, GradResult &r) {
  Emitter &e = ctx.e;
  const std::string &c = n.inputs[0]->name;
  std::string zero = e.scalar("zero", 0.0);
  if (ctx.want(1))
    r.set(1, e.op("Where", {c, gyOf(ctx), zero}, n.inputs[1]->name + "_grad"), true);
  if (ctx.want(2))
    r.set(2, e.op("Where", {c, zero, gyOf(ctx)}, n.inputs[2]->name + "_grad"), true);
  return llvm::Error::success();
}

llvm::Error dropout(const GradContext &ctx, const Node &n, GradResult &r) {
  if (n.inputs.size() > 2 && n.inputs[2])
    return fail("Dropout '" + n.label() +
                "': training-mode dropout is not supported yet (export the model in eval mode)");
  return pass(ctx, n, r);
}

} // namespace

void registerElementwiseGradRules(GradRuleRegistry &r) {
  r.add("Add", add, "elementwise");
  r.add("Sub", sub, "elementwise");
  r.add("Mul", mul, "elementwise");
  r.add("Div", div, "elementwise");
  r.add("Pow", pow, "elementwise");
  r.add("Where", where, "elementwise");
  r.add("Identity", pass, "elementwise");
  r.add("Dropout", dropout, "elementwise");
  r.add("Neg", neg, "elementwise");
  r.add("Cast", cast, "elementwise");
  r.add("Relu", relu, "elementwise");
  r.add("Tanh", tanh, "elementwise");
  r.add("Sigmoid", sigmoid, "elementwise");
  r.add("Exp", exp, "elementwise");
  r.add("Log", log, "elementwise");
  r.add("Sqrt", sqrt, "elementwise");
  r.add("Reciprocal", reciprocal, "elementwise");
  r.add("Erf", erf, "elementwise");
  r.add("Sin", sin, "elementwise");
  r.add("Cos", cos, "elementwise");
}

} // namespace qn::grad
