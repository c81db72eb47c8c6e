//===- Pad.cpp - Uneven output features padded to a multiple of tp --------===//
//
// A vocabulary is rarely a multiple of tp (GPT-2's 50257, Llama's 32001):
// left as it is, the LM head stays replicated, the largest GEMM of the model
// computed whole on every rank. As Megatron does, the head's weight is
// padded with zero columns to Np, the next multiple of tp, before planning:
//
//   y' = MatMul(x, [W | 0])            [.., Np]   column-parallel, Np/tp each
//   (+ [b | 0], Cast, Identity)         on the way to the graph output
//   y  = Slice(y', 0, N, axis -1)       the padded logits never reach the user
//
// The Slice cuts the sharded axis, so the gather lands before it (Lower.cpp)
// and the padding is dropped right after: numbers are those of the model.
// Only a Linear whose output reaches a graph output through a bias Add, Cast
// or Identity alone is padded (elsewhere the padded features would meet
// ops that read them: a softmax, an argmax). The word embedding's table is
// padded with zero rows by the vocab-parallel rewrite (Embedding.cpp).
//
//===----------------------------------------------------------------------===//
#include "qn/compiler/Partition.h"

#include <cstring>

namespace qn {
namespace {

/// `t` (float, float16 or double) with its last axis padded by zeros from n
/// to np. False for other types. Constants hold raw data (the importer's
/// normalizeToRawData).
bool padLastAxis(const onnx::TensorProto &t, int64_t np, onnx::TensorProto &out) {
  const int32_t type = t.data_type();
  const size_t elem = elemTypeSize(type);
  if (t.dims_size() < 1 || !t.has_raw_data() ||
      (type != onnx::TensorProto::FLOAT && type != onnx::TensorProto::FLOAT16 &&
       type != onnx::TensorProto::DOUBLE))
    return false;
  const std::string &raw = t.raw_data();
  const int64_t n = t.dims(t.dims_size() - 1);
  if (n <= 0 || raw.size() % (static_cast<size_t>(n) * elem))
    return false;
  const size_t rows = raw.size() / (static_cast<size_t>(n) * elem);
  std::string padded(rows * static_cast<size_t>(np) * elem, '\0');
  for (size_t r = 0; r < rows; ++r)
    std::memcpy(&padded[r * np * elem], &raw[r * n * elem], n * elem);
  out = onnx::TensorProto();
  out.set_data_type(type);
  for (int i = 0; i + 1 < t.dims_size(); ++i)
    out.add_dims(t.dims(i));
  out.add_dims(np);
  out.set_raw_data(std::move(padded));
  return true;
}

} // namespace

std::vector<PaddedLinear> padUnevenHeads(Graph &g, const PartitionOptions &opts) {
  std::vector<PaddedLinear> done;
  if (opts.tp < 2 || g.opsetVersion() < 10)
    return done;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    Node *mm = g.nodes[i].get();
    if (mm->opType() != "MatMul" || !mm->domain().empty() || mm->inputs.size() != 2 ||
        !mm->inputs[0] || mm->inputs[0]->constant || !mm->inputs[1] ||
        !mm->inputs[1]->constant || mm->inputs[1]->rank() != 2 || !mm->outputs[0])
      continue;
    const onnx::TensorProto &w = *mm->inputs[1]->constant;
    const int64_t K = w.dims(0), N = w.dims(1), tp = opts.tp;
    const int64_t bytes = K * N * static_cast<int64_t>(elemTypeSize(w.data_type()));
    if (N % tp == 0 || N < tp || bytes < opts.replicateBelowBytes)
      continue;
    const int64_t Np = (N + tp - 1) / tp * tp;
    // The way to a graph output: single readers, bias Adds, Casts, Identities.
    std::vector<Node *> chain;
    Value *y = mm->outputs[0];
    bool ok = true;
    while (ok && !y->isGraphOutput) {
      if (y->uses.size() != 1) {
        ok = false;
        break;
      }
      Node *u = y->uses[0].first;
      llvm::StringRef op = u->opType();
      if (op == "Add" && u->inputs.size() == 2) {
        const Value *b = u->inputs[1 - y->uses[0].second];
        ok = b && b->constant && b->hasShape && b->rank() >= 1 && b->rank() <= y->rank() &&
             b->dimSize(-1) == N;
      } else {
        ok = op == "Cast" || op == "Identity";
      }
      if (ok) {
        chain.push_back(u);
        y = u->outputs[0];
      }
    }
    if (!ok || !y->uses.empty() || !y->hasShape || y->dimSize(-1) != N)
      continue;
    onnx::TensorProto pw;
    if (!padLastAxis(w, Np, pw))
      continue;
    std::vector<std::pair<Node *, onnx::TensorProto>> biases;
    for (Node *u : chain)
      if (u->opType() == "Add") {
        unsigned bi = u->inputs[0]->constant ? 0 : 1;
        onnx::TensorProto pb;
        if (!padLastAxis(*u->inputs[bi]->constant, Np, pb)) {
          ok = false;
          break;
        }
        pb.set_name(g.uniqueName(u->inputs[bi]->name + "__qn_padded"));
        biases.push_back({u, std::move(pb)});
      }
    if (!ok)
      continue;
    // Rewrite: padded weight and biases, every value on the way Np wide, the
    // graph output the Slice of the last one.
    pw.set_name(g.uniqueName(mm->inputs[1]->name + "__qn_padded"));
    PaddedLinear info{mm, mm->inputs[1]->name, N, Np};
    mm->inputs[1] = g.addConstant(std::move(pw));
    for (auto &[u, pb] : biases) {
      unsigned bi = u->inputs[0]->constant ? 0 : 1;
      u->inputs[bi] = g.addConstant(std::move(pb));
    }
    Value *v = mm->outputs[0];
    for (size_t k = 0;; ++k) {
      if (v != y)
        v->shape.back() = Dim{Np, {}};
      if (k == chain.size())
        break;
      v = chain[k]->outputs[0];
    }
    Node *last = chain.empty() ? mm : chain.back();
    std::string wide = g.uniqueName(y->name + "__qn_padded");
    Value *wv = g.getOrCreate(wide);
    wv->elemType = y->elemType;
    wv->hasShape = true;
    wv->shape = y->shape;
    wv->shape.back() = Dim{Np, {}};
    last->outputs[0] = wv;
    last->proto.set_output(0, wide);
    wv->producer = last;
    Value *starts = g.addConstant(int64Tensor(g.uniqueName(y->name + "__qn_unpad_start"), {0}));
    Value *ends = g.addConstant(int64Tensor(g.uniqueName(y->name + "__qn_unpad_end"), {N}));
    Value *axes = g.addConstant(int64Tensor(g.uniqueName(y->name + "__qn_unpad_axis"), {-1}));
    y->producer = nullptr;
    g.insertNode(g.indexOf(last) + 1,
                 makeNodeProto("Slice", mm->label() + "/unpad",
                               {wide, starts->name, ends->name, axes->name}, y->name));
    done.push_back(std::move(info));
  }
  return done;
}

const PaddedLinear *paddedOf(const Plan &plan, const Node *node) {
  for (const PaddedLinear &p : plan.padded)
    if (p.node == node)
      return &p;
  return nullptr;
}

} // namespace qn
