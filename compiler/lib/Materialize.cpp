//===- Materialize.cpp - Rank models, their verification, annotation ------===//
#include "qn/compiler/Import.h"
#include "qn/compiler/Partition.h"

#include <onnx/checker.h>
#include <onnx/shape_inference/implementation.h>

namespace qn {

onnx::TensorProto sliceTensor(const onnx::TensorProto &t, int axis, int index, int parts,
                              int blocks) {
  onnx::TensorProto out;
  out.set_name(t.name());
  out.set_data_type(t.data_type());
  size_t esize = elemTypeSize(t.data_type());
  int64_t outer = 1, inner = static_cast<int64_t>(esize);
  for (int i = 0; i < t.dims_size(); ++i) {
    if (i < axis)
      outer *= t.dims(i);
    else if (i > axis)
      inner *= t.dims(i);
  }
  int64_t extent = t.dims(axis), block = extent / blocks, chunk = block / parts;
  for (int i = 0; i < t.dims_size(); ++i)
    out.add_dims(i == axis ? chunk * blocks : t.dims(i));
  const std::string &src = t.raw_data();
  std::string dst;
  dst.reserve(static_cast<size_t>(outer * chunk * blocks * inner));
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t b = 0; b < blocks; ++b)
      dst.append(src, static_cast<size_t>((o * extent + b * block + index * chunk) * inner),
                 static_cast<size_t>(chunk * inner));
  out.set_raw_data(std::move(dst));
  return out;
}

llvm::Expected<onnx::ModelProto> materializeRank(const Plan &plan, const Graph &g, int rank) {
  const onnx::ModelProto &src = g.model;
  onnx::ModelProto m;
  m.set_ir_version(src.ir_version());
  m.set_producer_name("qn-compile");
  m.set_producer_version("0.1");
  m.set_doc_string("QuintNet plan: rank " + std::to_string(rank) + " of " +
                   std::to_string(plan.tp) + ", partitioned from " + g.sourcePath);
  for (const auto &op : src.opset_import())
    if (op.domain() != "ai.quintnet")
      *m.add_opset_import() = op;
  auto *qn = m.add_opset_import();
  qn->set_domain("ai.quintnet");
  qn->set_version(1);
  onnx::GraphProto &gp = *m.mutable_graph();
  gp.set_name(src.graph().name());
  for (const Value *v : g.inputs)
    for (const auto &vi : src.graph().input())
      if (vi.name() == v->name)
        *gp.add_input() = vi;
  for (const auto &vi : src.graph().output()) {
    onnx::ValueInfoProto &out = *gp.add_output();
    out = vi;
    // An output kept sharded holds 1/N of its sharded axis on each rank.
    auto it = plan.outputPlacements.find(vi.name());
    if (it != plan.outputPlacements.end() && it->second.isShard()) {
      auto *shape = out.mutable_type()->mutable_tensor_type()->mutable_shape();
      if (it->second.axis < shape->dim_size()) {
        auto *d = shape->mutable_dim(it->second.axis);
        if (d->has_dim_value())
          d->set_dim_value(d->dim_value() / plan.tp);
        else
          d->clear_dim_param();
      }
    }
  }
  for (const PlannedNode &pn : plan.nodes)
    *gp.add_node() = pn.proto;
  for (const RankConstant &rc : plan.constants) {
    onnx::TensorProto t;
    if (rc.generate)
      t = rc.generate(rank, plan.tp);
    else if (rc.shardAxis >= 0)
      t = sliceTensor(*rc.source, rc.shardAxis, rank, plan.tp, rc.blocks);
    else
      t = *rc.source;
    t.set_name(rc.name);
    *gp.add_initializer() = std::move(t);
  }
  return m;
}

static std::vector<std::string> collectiveSequence(const onnx::ModelProto &m) {
  std::vector<std::string> seq;
  for (const auto &n : m.graph().node()) {
    if (n.domain() != "ai.quintnet")
      continue;
    std::string s = n.op_type();
    for (const auto &a : n.attribute())
      s += " " + a.name() + "=" + std::to_string(a.i());
    seq.push_back(s);
  }
  return seq;
}

llvm::Error verifyRanks(const std::vector<onnx::ModelProto> &ranks) {
  registerQuintNetSchemas();
  for (size_t k = 0; k < ranks.size(); ++k) {
    onnx::ModelProto m = ranks[k];
    try {
      onnx::checker::check_model(m);
      onnx::ShapeInferenceOptions opts{true, 1, false};
      onnx::shape_inference::InferShapes(m, onnx::OpSchemaRegistry::Instance(), opts);
    } catch (const std::exception &e) {
      return fail("internal: the plan of rank " + llvm::Twine(k) +
                  " does not type-check: " + e.what());
    }
  }
  auto first = collectiveSequence(ranks.front());
  for (size_t k = 1; k < ranks.size(); ++k)
    if (collectiveSequence(ranks[k]) != first)
      return fail("internal: rank " + llvm::Twine(k) +
                  " issues a different sequence of collectives than rank 0");
  return llvm::Error::success();
}

void printAnnotated(const Plan &plan, const Graph &g, llvm::raw_ostream &os) {
  os << "graph '" << g.model.graph().name() << "' tp=" << plan.tp << "\n";
  for (const Value *v : g.inputs)
    os << "input " << v->name << ":R\n";
  for (const PlannedNode &pn : plan.nodes) {
    const auto &n = pn.proto;
    os << (n.domain().empty() ? "" : n.domain() + ".") << n.op_type() << " '" << n.name()
       << "'";
    if (!pn.role.empty())
      os << " [" << pn.role << "]";
    os << " (";
    for (int i = 0; i < n.input_size(); ++i) {
      if (i)
        os << ", ";
      os << n.input(i);
      if (!n.input(i).empty() && static_cast<size_t>(i) < pn.in.size())
        os << ":" << pn.in[i].str();
    }
    os << ") -> (";
    for (int i = 0; i < n.output_size(); ++i) {
      if (i)
        os << ", ";
      os << n.output(i);
      if (static_cast<size_t>(i) < pn.out.size())
        os << ":" << pn.out[i].str();
    }
    os << ")\n";
  }
  for (const Value *v : g.outputs) {
    auto it = plan.outputPlacements.find(v->name);
    os << "output " << v->name << ":"
       << (it == plan.outputPlacements.end() ? std::string("R") : it->second.str()) << "\n";
  }
  os << "collectives:";
  for (const auto &kv : plan.collectiveCounts)
    os << " " << kv.first << "=" << kv.second;
  os << "\n";
}

} // namespace qn
