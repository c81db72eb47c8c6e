//===- Linear.cpp - Recognising Linear layers and choosing strategies -----===//
#include "qn/compiler/Partition.h"

#include <numeric>

#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringSet.h"

namespace qn {
namespace {

llvm::Error fail(const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg);
}

int64_t attrInt(const onnx::NodeProto &n, llvm::StringRef name, int64_t dflt) {
  for (const auto &a : n.attribute())
    if (a.name() == name)
      return a.i();
  return dflt;
}

float attrFloat(const onnx::NodeProto &n, llvm::StringRef name, float dflt) {
  for (const auto &a : n.attribute())
    if (a.name() == name)
      return a.f();
  return dflt;
}

} // namespace

/// Elementwise ops through which a last-axis shard flows unchanged (used to
/// find Megatron pairs; Propagate.cpp has the full rules).
bool isShardPreservingElementwise(llvm::StringRef op) {
  static const llvm::StringSet<> ops = {
      "Relu", "Tanh", "Sigmoid", "Erf", "Gelu", "Exp", "Log", "Sqrt", "Abs", "Neg",
      "Reciprocal", "Softplus", "LeakyRelu", "Elu", "Selu", "HardSigmoid", "HardSwish",
      "Cast", "Identity", "Floor", "Ceil", "Sin", "Cos", "Clip", "Add", "Sub", "Mul",
      "Div", "Pow", "Max", "Min", "Where", "Dropout"};
  return ops.contains(op);
}

const char *strategyName(LinearStrategy s) {
  switch (s) {
  case LinearStrategy::Replicate:
    return "replicated";
  case LinearStrategy::Column:
    return "column";
  case LinearStrategy::Row:
    return "row";
  }
  return "?";
}

std::string divisorsList(int64_t n, int limit) {
  std::string s;
  int count = 0;
  for (int64_t d = 1; d <= n; ++d) {
    if (n % d)
      continue;
    if (count == limit) {
      s += ", ...";
      break;
    }
    if (count++)
      s += ", ";
    s += std::to_string(d);
  }
  return s;
}

std::vector<LinearInfo> findLinears(const Graph &g) {
  std::vector<LinearInfo> out;
  for (const auto &np : g.nodes) {
    Node *n = np.get();
    if (!n->domain().empty() || n->inputs.size() < 2 || !n->inputs[0] || !n->inputs[1])
      continue;
    Value *x = n->inputs[0], *w = n->inputs[1];
    if (x->constant || !w->constant || w->constant->dims_size() != 2 || !x->hasShape ||
        x->rank() < 2 || !n->outputs[0])
      continue;
    LinearInfo li;
    li.node = n;
    if (n->opType() == "MatMul") {
      li.actKAxis = static_cast<int>(x->rank() - 1);
    } else if (n->opType() == "Gemm") {
      li.isGemm = true;
      bool transA = attrInt(n->proto, "transA", 0), transB = attrInt(n->proto, "transB", 0);
      li.actKAxis = transA ? 0 : 1;
      li.weightKAxis = transB ? 1 : 0;
      li.weightNAxis = transB ? 0 : 1;
    } else {
      continue;
    }
    li.K = w->constant->dims(li.weightKAxis);
    li.N = w->constant->dims(li.weightNAxis);
    li.weightBytes = tensorNumElements(*w->constant) *
                     static_cast<int64_t>(elemTypeSize(w->constant->data_type()));
    out.push_back(li);
  }
  return out;
}

/// From a column-parallel candidate, follows its output through
/// shard-preserving elementwise ops (fan-out included, as in an Erf GELU) and
/// collects the Linears that consume it as their activation. Returns false if
/// the sharded value escapes anywhere else (a graph output, a reshape, a
/// softmax, ...), in which case no pair is formed.
static bool findRowPartners(const Graph &g, const LinearInfo &col,
                            llvm::DenseMap<const Node *, LinearInfo *> &byNode,
                            llvm::SmallVectorImpl<LinearInfo *> &rows) {
  llvm::DenseSet<const Value *> reached;
  reached.insert(col.node->outputs[0]);
  if (col.node->outputs[0]->isGraphOutput)
    return false;
  size_t start = g.indexOf(col.node) + 1;
  for (size_t i = start; i < g.nodes.size(); ++i) {
    const Node *n = g.nodes[i].get();
    bool touches = false;
    for (const Value *v : n->inputs)
      touches |= v && reached.count(v);
    if (!touches)
      continue;
    auto it = byNode.find(n);
    if (it != byNode.end()) {
      LinearInfo *li = it->second;
      // Only the activation may be sharded, along K, and K must match.
      if (!reached.count(n->inputs[0]) || reached.count(n->inputs[1]) ||
          (n->inputs.size() > 2 && n->inputs[2] && reached.count(n->inputs[2])) ||
          li->strategy != LinearStrategy::Replicate || !li->pairedWith.empty() ||
          li->K != col.N || li->actKAxis != n->inputs[0]->rank() - 1)
        return false;
      rows.push_back(li);
      continue;
    }
    if (!n->domain().empty() || !isShardPreservingElementwise(n->opType()))
      return false;
    // Every non-constant input must carry the same shard; constants are sliced.
    for (const Value *v : n->inputs)
      if (v && !v->constant && !reached.count(v))
        return false;
    for (const Value *v : n->outputs) {
      if (!v)
        continue;
      if (v->isGraphOutput || !v->hasShape)
        return false;
      reached.insert(v);
    }
  }
  return !rows.empty();
}

llvm::Error planStrategies(Graph &g, std::vector<LinearInfo> &linears,
                           const PartitionOptions &opts) {
  llvm::DenseMap<const Node *, LinearInfo *> byNode;
  for (LinearInfo &li : linears)
    byNode[li.node] = &li;
  const int tp = opts.tp;
  std::vector<std::pair<LinearInfo *, LinearInfo *>> pairs;
  for (LinearInfo &li : linears) {
    if (li.strategy != LinearStrategy::Replicate || !li.pairedWith.empty())
      continue; // already the row half of a pair
    llvm::SmallVector<LinearInfo *, 2> rows;
    if (findRowPartners(g, li, byNode, rows)) {
      li.strategy = LinearStrategy::Column;
      li.pairedWith = rows.front()->node->label();
      for (LinearInfo *r : rows) {
        r->strategy = LinearStrategy::Row;
        r->pairedWith = li.node->label();
        pairs.push_back({&li, r});
      }
      continue;
    }
    // A lone Linear: column-parallel then gathered, or replicated when the
    // weight is too small for sharding to pay, or tp does not divide N.
    if (tp > 1 && li.N % tp == 0 && li.weightBytes >= opts.replicateBelowBytes)
      li.strategy = LinearStrategy::Column;
  }
  if (tp == 1) {
    for (LinearInfo &li : linears)
      li.strategy = LinearStrategy::Replicate;
    return llvm::Error::success();
  }
  // Every pair shards its inner dimension: tp must divide it.
  int64_t common = 0;
  for (auto &p : pairs)
    common = std::gcd(common, p.first->N);
  for (auto &p : pairs) {
    if (p.first->N % tp == 0)
      continue;
    return fail("cannot split '" + p.first->node->label() + "' (" + p.first->node->opType() +
                ", " + llvm::Twine(p.first->N) + " output features) and '" +
                p.second->node->label() + "' (" + p.second->node->opType() +
                ") over --tp " + llvm::Twine(tp) + ": " + llvm::Twine(p.first->N) +
                " is not divisible by " + llvm::Twine(tp) +
                "; tp values that work for this model: " + divisorsList(common));
  }
  return llvm::Error::success();
}

llvm::Error splitRowGemmBias(Graph &g, std::vector<LinearInfo> &linears) {
  for (LinearInfo &li : linears) {
    Node *n = li.node;
    if (!li.isGemm || li.strategy != LinearStrategy::Row || n->inputs.size() < 3 ||
        !n->inputs[2])
      continue;
    Value *c = n->inputs[2];
    if (!c->constant)
      return fail("row-parallel Gemm '" + n->label() +
                  "' has a non-constant bias C; not supported yet");
    float beta = attrFloat(n->proto, "beta", 1.0f);
    onnx::TensorProto bias = *c->constant;
    bias.set_name(g.uniqueName(c->name + "__qn_once"));
    if (beta != 1.0f) {
      if (bias.data_type() != onnx::TensorProto::FLOAT)
        return fail("Gemm '" + n->label() + "': beta != 1 with a non-float32 bias");
      std::string &raw = *bias.mutable_raw_data();
      float *p = reinterpret_cast<float *>(raw.data());
      for (size_t i = 0; i < raw.size() / 4; ++i)
        p[i] *= beta;
    }
    Value *biasValue = g.addConstant(std::move(bias));
    // Gemm(A, B) -> tmp; Add(tmp, beta*C) -> original output.
    Value *out = n->outputs[0];
    std::string tmpName = g.uniqueName(out->name + "__qn_nobias");
    Value *tmp = g.getOrCreate(tmpName);
    tmp->elemType = out->elemType;
    tmp->hasShape = out->hasShape;
    tmp->shape = out->shape;
    n->inputs.pop_back();
    n->proto.mutable_input()->RemoveLast();
    for (int i = 0; i < n->proto.attribute_size(); ++i)
      if (n->proto.attribute(i).name() == "beta") {
        n->proto.mutable_attribute()->DeleteSubrange(i, 1);
        break;
      }
    n->outputs[0] = tmp;
    n->proto.set_output(0, tmpName);
    tmp->producer = n;
    onnx::NodeProto add;
    add.set_op_type("Add");
    add.set_name(n->label() + "/bias_once");
    add.add_input(tmpName);
    add.add_input(biasValue->name);
    add.add_output(out->name);
    g.insertNode(g.indexOf(n) + 1, std::move(add));
  }
  return llvm::Error::success();
}

} // namespace qn
