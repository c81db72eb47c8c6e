//===- Embedding.cpp - Vocab-parallel embedding lookups -------------------===//
//
// Gather(table[V,H], ids) with a constant table: rank k holds rows
// [kV/N, (k+1)V/N). The lookup is rewritten, with standard ops only, into
//
//   norm  = Where(Less(ids, 0), Add(ids, V), ids)   ONNX's negative ids: [-V, V) -> [0, V)
//   local = Sub(norm, start_k)                       start_k = kV/N (rank-dependent)
//   in    = And(Greater(local, -1), Less(local, V/N))   this rank's rows
//   ok    = And(Greater(norm, -1), Less(norm, V))       a valid id at all
//   safe  = Where(in, local, Where(ok, 0, ids))
//   part  = Gather(table_k, safe)                    P: garbage where not `in`
//   out   = part * Unsqueeze(Cast(in, table's dtype), -1)   P: the rank's rows, else 0
//
// so the sum over ranks of `out` is the lookup (Megatron's
// VocabParallelEmbedding); the AllReduce comes from the redistribution of P.
// An id outside [-V, V), which the original Gather rejects, reaches every
// rank's Gather unchanged: it is outside [-V/N, V/N) too, so every rank fails
// there (naming the Gather) instead of summing zero rows.
//
//===----------------------------------------------------------------------===//
#include "qn/compiler/Partition.h"

#include <algorithm>

namespace qn {
namespace {


void setIntAttr(onnx::NodeProto &n, const char *name, int64_t v) {
  auto *a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}

} // namespace

std::vector<EmbeddingInfo> findEmbeddings(const Graph &g, const PartitionOptions &opts) {
  std::vector<EmbeddingInfo> out;
  for (const auto &np : g.nodes) {
    Node *n = np.get();
    if (n->opType() != "Gather" || !n->domain().empty() || n->inputs.size() != 2 ||
        !n->inputs[0] || !n->inputs[1] || !n->outputs[0])
      continue;
    const Value *table = n->inputs[0], *ids = n->inputs[1];
    if (!table->constant || table->constant->dims_size() != 2 || ids->constant ||
        attrInt(n->proto, "axis", 0) != 0 ||
        (ids->elemType != onnx::TensorProto::INT64 && ids->elemType != onnx::TensorProto::INT32))
      continue;
    EmbeddingInfo e;
    e.node = n;
    e.V = table->constant->dims(0);
    e.H = table->constant->dims(1);
    e.tableBytes = e.V * e.H * static_cast<int64_t>(elemTypeSize(table->elemType));
    e.paddedV = opts.tp > 1 ? (e.V + opts.tp - 1) / opts.tp * opts.tp : e.V;
    e.vocabParallel = opts.tp > 1 && e.V >= opts.tp && e.tableBytes >= opts.replicateBelowBytes &&
                      (table->elemType == onnx::TensorProto::FLOAT ||
                       table->elemType == onnx::TensorProto::FLOAT16 ||
                       table->elemType == onnx::TensorProto::DOUBLE);
    out.push_back(e);
  }
  // Megatron shards the word embedding only: a far smaller table (positions,
  // token types: GPT-2's 1024 positions against 50257 words, BERT's 512 and
  // 2 against 30522) saves little memory and would cost an AllReduce per
  // lookup. Tables with at least a quarter of the largest table's rows count
  // as word embeddings.
  int64_t words = 0;
  for (const EmbeddingInfo &e : out)
    words = std::max(words, e.V);
  for (EmbeddingInfo &e : out)
    if (4 * e.V < words)
      e.vocabParallel = false;
  return out;
}

llvm::Error rewriteVocabParallel(Graph &g, std::vector<EmbeddingInfo> &embeddings,
                                 RewriteState &state) {
  for (EmbeddingInfo &e : embeddings) {
    Node *gather = e.node;
    if (!e.vocabParallel) {
      state.roles[gather] = "replicated";
      continue;
    }
    Value *table = gather->inputs[0], *ids = gather->inputs[1], *out = gather->outputs[0];
    const int32_t idType = ids->elemType, valType = table->elemType;
    // A vocabulary tp does not divide: the table padded with zero rows to
    // paddedV (each rank paddedV/tp rows); ids keep the true V, so an id in
    // [V, paddedV) is still an error, and negative ids count from V.
    if (e.paddedV != e.V && table->constant->dims(0) != e.paddedV) { // training pads it earlier
      onnx::TensorProto padded;
      const onnx::TensorProto &t = *table->constant; // raw data: normalizeToRawData
      const size_t elem = elemTypeSize(t.data_type());
      std::string raw = t.raw_data();
      raw.resize(static_cast<size_t>(e.paddedV * e.H) * elem, '\0');
      padded.set_name(g.uniqueName(table->name + "__qn_padded"));
      padded.set_data_type(t.data_type());
      padded.add_dims(e.paddedV);
      padded.add_dims(e.H);
      padded.set_raw_data(std::move(raw));
      table = g.addConstant(std::move(padded));
      gather->inputs[0] = table;
    }
    const int64_t rows = e.paddedV; // divided per rank by the generator below
    const int64_t vocabSize = e.V;
    std::string base = g.uniqueName(out->name + "__qn_vocab");
    auto name = [&](llvm::StringRef suffix) { return g.uniqueName(base + "_" + suffix.str()); };

    // Constants: this rank's first row (rank-dependent), rows per rank, -1.
    std::string startName = name("start");
    g.addConstant(intScalar(startName, idType, 0));
    state.rankDependent[startName] = [startName, idType, rows](int rank, int tp) {
      return intScalar(startName, idType, rank * (rows / tp));
    };
    std::string rowsName = name("rows");
    g.addConstant(intScalar(rowsName, idType, 0));
    state.rankDependent[rowsName] = [rowsName, idType, rows](int, int tp) {
      return intScalar(rowsName, idType, rows / tp);
    };
    std::string minus1 = name("minus1"), zero = name("zero"), vocab = name("vocab");
    g.addConstant(intScalar(minus1, idType, -1));
    g.addConstant(intScalar(zero, idType, 0));
    g.addConstant(intScalar(vocab, idType, vocabSize));
    std::string axes = name("axes");
    onnx::TensorProto axesT;
    axesT.set_name(axes);
    axesT.set_data_type(onnx::TensorProto::INT64);
    axesT.add_dims(1);
    int64_t minusOne = -1;
    axesT.set_raw_data(std::string(reinterpret_cast<const char *>(&minusOne), 8));
    g.addConstant(axesT);

    std::string neg = name("neg"), wrapped = name("wrapped"), norm = name("norm"),
                local = name("local"), ge = name("ge"), lt = name("lt"), in = name("in"),
                okGe = name("ok_ge"), okLt = name("ok_lt"), ok = name("ok"), bad = name("bad"),
                mask = name("mask"), safe = name("safe"), part = name("part"),
                inRange = name("in_range"),
                mask3 = name("mask_h");
    std::string label = gather->label();
    std::vector<onnx::NodeProto> before;
    before.push_back(makeNodeProto("Less", label + "/neg", {ids->name, zero}, neg));
    before.push_back(makeNodeProto("Add", label + "/wrapped", {ids->name, vocab}, wrapped));
    before.push_back(makeNodeProto("Where", label + "/norm", {neg, wrapped, ids->name}, norm));
    before.push_back(makeNodeProto("Sub", label + "/local", {norm, startName}, local));
    before.push_back(makeNodeProto("Greater", label + "/ge", {local, minus1}, ge));
    before.push_back(makeNodeProto("Less", label + "/lt", {local, rowsName}, lt));
    // With padded rows, the last rank's padding holds no ids: an id in
    // [V, paddedV) must fail like any other out of range, so `in` also
    // needs `ok`.
    const bool padded = e.paddedV != e.V;
    before.push_back(makeNodeProto("And", label + (padded ? "/in_range" : "/in"), {ge, lt},
                              padded ? inRange : in));
    before.push_back(makeNodeProto("Greater", label + "/ok_ge", {norm, minus1}, okGe));
    before.push_back(makeNodeProto("Less", label + "/ok_lt", {norm, vocab}, okLt));
    before.push_back(makeNodeProto("And", label + "/ok", {okGe, okLt}, ok));
    if (padded)
      before.push_back(makeNodeProto("And", label + "/in", {inRange, ok}, in));
    before.push_back(makeNodeProto("Where", label + "/bad", {ok, zero, ids->name}, bad));
    before.push_back(makeNodeProto("Where", label + "/safe", {in, local, bad}, safe));
    before.push_back(makeNodeProto("Cast", label + "/mask", {in}, mask));
    setIntAttr(before.back(), "to", valType);
    size_t pos = g.indexOf(gather);
    for (onnx::NodeProto &n : before)
      g.insertNode(pos++, std::move(n));

    // The Gather now reads the safe local ids and yields a partial value.
    gather->inputs[1] = g.getOrCreate(safe);
    Value *partV = g.getOrCreate(part);
    partV->elemType = out->elemType;
    partV->hasShape = out->hasShape;
    partV->shape = out->shape;
    gather->outputs[0] = partV;
    gather->proto.set_output(0, part);
    partV->producer = gather;
    state.fixed[gather] = NodePlacements{{Placement::S(0), Placement::R()}, {Placement::P()}, {}};
    state.roles[gather] = "vocab";

    onnx::NodeProto unsq = makeNodeProto("Unsqueeze", label + "/mask_h", {mask}, mask3);
    if (g.opsetVersion() >= 13) {
      unsq.add_input(axes);
    } else {
      auto *a = unsq.add_attribute();
      a->set_name("axes");
      a->set_type(onnx::AttributeProto::INTS);
      a->add_ints(-1);
    }
    Node *unsqNode = g.insertNode(pos + 1, std::move(unsq));
    (void)unsqNode;
    Node *apply = g.insertNode(pos + 2, makeNodeProto("Mul", label + "/masked", {part, mask3}, out->name));
    state.fixed[apply] = NodePlacements{{Placement::P(), Placement::R()}, {Placement::P()}, {}};
    state.roles[apply] = "vocab-mask";
  }
  return llvm::Error::success();
}

} // namespace qn
