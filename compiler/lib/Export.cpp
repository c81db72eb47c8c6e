//===- Export.cpp - Plan folder -------------------------------------------===//
#include <map>
#include "qn/compiler/Export.h"
#include "qn/compiler/Train.h"

#include <unistd.h>

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/SHA256.h"
#include "llvm/Support/raw_ostream.h"

namespace qn {
namespace {


std::string sha256Hex(llvm::StringRef bytes) {
  return llvm::toHex(llvm::SHA256::hash(llvm::arrayRefFromStringRef(bytes)), true);
}

llvm::Error writeFile(llvm::StringRef path, llvm::StringRef bytes) {
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec, llvm::sys::fs::OF_None);
  if (ec)
    return fail("cannot write '" + path + "': " + ec.message());
  os << bytes;
  os.close();
  if (os.has_error())
    return fail("cannot write '" + path + "': " + os.error().message());
  return llvm::Error::success();
}

/// Moves every initializer's data into `bin` (64-byte aligned) and points the
/// initializer at it as ONNX external data.
int64_t externalize(onnx::ModelProto &m, const std::string &binName, std::string &bin) {
  int64_t params = 0;
  for (auto &t : *m.mutable_graph()->mutable_initializer()) {
    size_t offset = (bin.size() + 63) / 64 * 64;
    bin.resize(offset, '\0');
    const std::string &raw = t.raw_data();
    bin.append(raw);
    params += static_cast<int64_t>(raw.size());
    auto add = [&](const char *k, const std::string &v) {
      auto *e = t.add_external_data();
      e->set_key(k);
      e->set_value(v);
    };
    add("location", binName);
    add("offset", std::to_string(offset));
    add("length", std::to_string(raw.size()));
    t.clear_raw_data();
    t.set_data_location(onnx::TensorProto::EXTERNAL);
  }
  return params;
}

llvm::json::Value valueJson(const onnx::ValueInfoProto &vi) {
  const auto &tt = vi.type().tensor_type();
  llvm::json::Array shape;
  for (const auto &d : tt.shape().dim()) {
    if (d.has_dim_value())
      shape.push_back(d.dim_value());
    else if (d.has_dim_param())
      shape.push_back(d.dim_param());
    else
      shape.push_back(nullptr);
  }
  static const std::map<int, const char *> names = {
      {onnx::TensorProto::FLOAT, "float32"}, {onnx::TensorProto::FLOAT16, "float16"},
      {onnx::TensorProto::BFLOAT16, "bfloat16"}, {onnx::TensorProto::DOUBLE, "float64"},
      {onnx::TensorProto::INT64, "int64"}, {onnx::TensorProto::INT32, "int32"},
      {onnx::TensorProto::INT8, "int8"}, {onnx::TensorProto::UINT8, "uint8"},
      {onnx::TensorProto::BOOL, "bool"}};
  auto it = names.find(tt.elem_type());
  return llvm::json::Object{{"name", vi.name()},
                            {"dtype", it == names.end() ? "unsupported" : it->second},
                            {"shape", std::move(shape)},
                            {"placement", "R"}};
}

/// The existing `dir` may be replaced only if it is an old plan or empty.
llvm::Error checkReplaceable(llvm::StringRef dir) {
  if (!llvm::sys::fs::exists(dir))
    return llvm::Error::success();
  if (!llvm::sys::fs::is_directory(dir))
    return fail("output '" + dir + "' exists and is not a folder");
  llvm::SmallString<256> manifest(dir);
  llvm::sys::path::append(manifest, "plan.json");
  if (llvm::sys::fs::exists(manifest))
    return llvm::Error::success();
  std::error_code ec;
  llvm::sys::fs::directory_iterator it(dir, ec);
  if (!ec && it == llvm::sys::fs::directory_iterator())
    return llvm::Error::success();
  return fail("output folder '" + dir +
              "' exists and does not hold a QuintNet plan; refusing to replace it");
}

} // namespace

llvm::Expected<ExportSummary> writePlanDirectory(const Plan &plan, const Graph &g,
                                                 llvm::StringRef dirArg) {
  llvm::SmallString<256> dir(dirArg);
  llvm::sys::path::remove_dots(dir, /*remove_dot_dot=*/false);
  while (dir.size() > 1 && llvm::sys::path::is_separator(dir.back()))
    dir.pop_back();
  if (auto err = checkReplaceable(dir))
    return err;

  std::vector<onnx::ModelProto> ranks;
  for (int k = 0; k < plan.tp; ++k) {
    auto m = materializeRank(plan, g, k);
    if (!m)
      return m.takeError();
    ranks.push_back(std::move(*m));
  }
  if (auto err = verifyRanks(ranks))
    return err;

  // Serialise everything in memory first; the plan id hashes all rank files.
  ExportSummary summary;
  summary.modelParamBytes = g.sourceParamBytes;
  std::vector<std::pair<std::string, std::string>> files; // name, bytes
  llvm::json::Array rankEntries;
  std::string planHashInput;
  for (int k = 0; k < plan.tp; ++k) {
    std::string binName = "rank" + std::to_string(k) + ".bin";
    std::string onnxName = "rank" + std::to_string(k) + ".onnx";
    std::string bin;
    int64_t params = externalize(ranks[k], binName, bin);
    std::string proto;
    if (!ranks[k].SerializeToString(&proto))
      return fail("internal: cannot serialise the plan of rank " + llvm::Twine(k));
    std::string hModel = sha256Hex(proto), hBin = sha256Hex(bin);
    planHashInput += hModel + hBin;
    summary.rankParamBytes.push_back(params);
    rankEntries.push_back(llvm::json::Object{{"rank", k},
                                             {"model", onnxName},
                                             {"weights", binName},
                                             {"param_bytes", params},
                                             {"model_sha256", hModel},
                                             {"weights_sha256", hBin}});
    files.push_back({onnxName, std::move(proto)});
    files.push_back({binName, std::move(bin)});
  }
  summary.planId = sha256Hex(planHashInput);

  llvm::json::Array inputs, outputs, strategies;
  for (const Value *v : g.inputs)
    for (const auto &vi : g.model.graph().input())
      if (vi.name() == v->name)
        inputs.push_back(valueJson(vi));
  for (const auto &vi : g.model.graph().output()) {
    llvm::json::Value v = valueJson(vi);
    auto it = plan.outputPlacements.find(vi.name());
    if (it != plan.outputPlacements.end())
      (*v.getAsObject())["placement"] = it->second.str();
    outputs.push_back(std::move(v));
  }
  for (const LinearInfo &li : plan.linears) {
    llvm::json::Object o{{"node", li.node->label()},
                         {"op", li.node->opType()},
                         {"strategy", strategyName(li.strategy)},
                         {"K", li.K},
                         {"N", li.N}};
    if (const PaddedLinear *p = paddedOf(plan, li.node)) {
      o["N"] = p->N;
      o["padded_N"] = p->paddedN;
    }
    strategies.push_back(std::move(o));
  }
  llvm::json::Array embeddings;
  for (const EmbeddingInfo &e : plan.embeddings)
    embeddings.push_back(llvm::json::Object{{"node", e.node->label()},
                                            {"strategy", e.vocabParallel ? "vocab" : "replicated"},
                                            {"V", e.V},
                                            {"padded_V", e.vocabParallel ? e.paddedV : e.V},
                                            {"H", e.H}});
  llvm::json::Object collectives, collectiveBytes;
  for (const auto &kv : plan.collectiveCounts)
    collectives[kv.first] = kv.second;
  for (const auto &kv : plan.collectiveStats)
    collectiveBytes[kv.first] = kv.second.bytesPerTokenPerRank;
  for (const RankConstant &rc : plan.constants)
    if (rc.source && rc.shardAxis < 0 && !rc.generate)
      summary.replicatedParamBytes += static_cast<int64_t>(rc.source->raw_data().size());
  // Absolute, so qn-run --save finds the source model from anywhere.
  llvm::SmallString<256> absoluteSource(g.sourcePath);
  llvm::sys::fs::make_absolute(absoluteSource);
  llvm::json::Object manifest{{"format", "quintnet-plan"},
                              {"format_version", 1},
                              {"tp", plan.tp},
                              {"plan_id", summary.planId},
                              {"source_model", absoluteSource},
                              {"source_sha256", g.sourceSha256},
                              {"model_param_bytes", summary.modelParamBytes},
                              {"ranks", std::move(rankEntries)},
                              {"inputs", std::move(inputs)},
                              {"outputs", std::move(outputs)},
                              {"collectives", std::move(collectives)},
                              {"collective_bytes_per_token_per_rank", std::move(collectiveBytes)},
                              {"replicated_param_bytes", summary.replicatedParamBytes},
                              {"linears", std::move(strategies)},
                              {"embeddings", std::move(embeddings)}};
  if (const TrainingInfo *t = plan.training.get()) {
    const TrainOptions &o = t->options;
    llvm::json::Array state;
    for (const TrainState &s : t->state)
      state.push_back(llvm::json::Object{{"name", s.name},
                                         {"update", s.update},
                                         {"param", s.param},
                                         {"kind", s.kind},
                                         {"source", s.source},
                                         {"source_scale", s.sourceScale},
                                         {"source_rows", s.sourceRows}});
    llvm::json::Array tied;
    for (const auto &[copy, of] : t->ties)
      tied.push_back(llvm::json::Object{{"copy", copy}, {"transpose_of", of}});
    manifest["training"] = llvm::json::Object{
        {"loss", t->loss},
        {"correct", t->correct},
        {"labels", t->labels},
        {"logits", t->logits},
        {"classes", t->classes},
        {"class_groups", t->classGroups},
        {"ignore_index", t->ignoreIndex},
        {"lr_input", t->lrInput},
        {"step_input", t->stepInput},
        {"optimizer", o.optimizer == OptimizerKind::Sgd ? "sgd" : "adamw"},
        {"lr", o.lr},
        {"momentum", o.momentum},
        {"weight_decay", o.weightDecay},
        {"beta1", o.beta1},
        {"beta2", o.beta2},
        {"eps", o.eps},
        {"lr_schedule", o.schedule == LrSchedule::Cosine ? "cosine" : "constant"},
        {"warmup_steps", o.warmupSteps},
        {"clip_grad_norm", o.clipGradNorm},
        {"state", std::move(state)},
        {"tied", std::move(tied)}};
  }
  std::string json;
  llvm::raw_string_ostream js(json);
  js << llvm::formatv("{0:2}", llvm::json::Value(std::move(manifest))) << "\n";
  js.flush();
  files.push_back({"plan.json", std::move(json)});

  // Write aside, then rename into place.
  llvm::SmallString<256> parent(dir);
  llvm::sys::path::remove_filename(parent);
  if (parent.empty())
    parent = ".";
  if (!llvm::sys::fs::is_directory(parent))
    return fail("cannot create '" + dir + "': folder '" + parent + "' does not exist");
  llvm::SmallString<256> tmp(dir);
  tmp += ".qn-tmp-" + std::to_string(::getpid());
  llvm::sys::fs::remove_directories(tmp, /*IgnoreErrors=*/true);
  if (std::error_code ec = llvm::sys::fs::create_directory(tmp))
    return fail("cannot create '" + tmp + "': " + ec.message());
  auto cleanup = [&](llvm::Error err) -> llvm::Error {
    llvm::sys::fs::remove_directories(tmp, true);
    return err;
  };
  for (const auto &f : files) {
    llvm::SmallString<256> path(tmp);
    llvm::sys::path::append(path, f.first);
    if (auto err = writeFile(path, f.second))
      return cleanup(std::move(err));
  }
  llvm::SmallString<256> old(dir);
  old += ".qn-old-" + std::to_string(::getpid());
  bool hadOld = llvm::sys::fs::exists(dir);
  if (hadOld)
    if (std::error_code ec = llvm::sys::fs::rename(dir, old))
      return cleanup(fail("cannot replace '" + dir + "': " + ec.message()));
  if (std::error_code ec = llvm::sys::fs::rename(tmp, dir)) {
    if (hadOld)
      llvm::sys::fs::rename(old, dir);
    return cleanup(fail("cannot create '" + dir + "': " + ec.message()));
  }
  if (hadOld)
    llvm::sys::fs::remove_directories(old, true);
  return summary;
}

} // namespace qn
