//===- Plan.cpp - plan.json and rank files --------------------------------===//
#include "qn/runtime/Plan.h"

#include <cmath>

#include <algorithm>

#include "qn/runtime/TensorProto.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

namespace qn::rt {
namespace {

llvm::Error fail(const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg);
}

DType dtypeFromName(llvm::StringRef s) {
  return llvm::StringSwitch<DType>(s)
      .Case("float32", DType::Float)
      .Case("float16", DType::Float16)
      .Case("bfloat16", DType::BFloat16)
      .Case("float64", DType::Double)
      .Case("int64", DType::Int64)
      .Case("int32", DType::Int32)
      .Case("int8", DType::Int8)
      .Case("uint8", DType::UInt8)
      .Case("bool", DType::Bool)
      .Default(DType::Undefined);
}

/// A file name of the plan: a plain name, no folders, no "..".
bool plainName(llvm::StringRef s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == llvm::StringRef::npos &&
         s.find('\\') == llvm::StringRef::npos;
}

llvm::Expected<std::vector<PlanValue>> readValues(const llvm::json::Object &o,
                                                  llvm::StringRef key,
                                                  llvm::StringRef where) {
  const llvm::json::Array *arr = o.getArray(key);
  if (!arr)
    return fail(where + ": missing '" + key + "'");
  std::vector<PlanValue> out;
  for (const llvm::json::Value &v : *arr) {
    const llvm::json::Object *vo = v.getAsObject();
    if (!vo)
      return fail(where + ": malformed entry in '" + key + "'");
    PlanValue pv;
    auto name = vo->getString("name");
    auto dtype = vo->getString("dtype");
    const llvm::json::Array *shape = vo->getArray("shape");
    if (!name || !dtype || !shape)
      return fail(where + ": entry of '" + key + "' lacks name, dtype or shape");
    pv.name = name->str();
    if (auto placement = vo->getString("placement"))
      pv.placement = placement->str();
    pv.dtype = dtypeFromName(*dtype);
    if (pv.dtype == DType::Undefined)
      return fail(where + ": " + key + " '" + pv.name + "' has unsupported dtype '" + *dtype + "'");
    for (const llvm::json::Value &d : *shape) {
      if (auto i = d.getAsInteger()) {
        pv.dims.push_back(*i);
        pv.symbols.emplace_back();
      } else {
        pv.dims.push_back(-1);
        auto s = d.getAsString();
        pv.symbols.push_back(s ? s->str() : std::string());
      }
    }
    out.push_back(std::move(pv));
  }
  return out;
}

} // namespace

std::string PlanValue::describe() const {
  std::string s = std::string(dtypeName(dtype)) + "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i)
      s += ",";
    s += dims[i] >= 0 ? std::to_string(dims[i]) : (symbols[i].empty() ? "?" : symbols[i]);
  }
  return s + "]";
}

llvm::Expected<PlanManifest> loadManifest(llvm::StringRef dir) {
  llvm::SmallString<256> path(dir);
  llvm::sys::path::append(path, "plan.json");
  auto buf = llvm::MemoryBuffer::getFile(path);
  if (!buf)
    return fail("cannot read '" + path + "': " + buf.getError().message() +
                " (is '" + dir + "' a plan folder written by qn-compile?)");
  return parseManifest((*buf)->getBuffer(), dir, path);
}

llvm::Expected<PlanManifest> parseManifest(llvm::StringRef text, llvm::StringRef dir,
                                           llvm::StringRef path) {
  auto json = llvm::json::parse(text);
  if (!json)
    return fail("'" + path + "' is not valid JSON: " + llvm::toString(json.takeError()));
  const llvm::json::Object *o = json->getAsObject();
  if (!o || o->getString("format") != llvm::Optional<llvm::StringRef>("quintnet-plan"))
    return fail("'" + path + "' is not a QuintNet plan manifest");
  if (o->getInteger("format_version") != llvm::Optional<int64_t>(1))
    return fail("'" + path + "': unsupported format_version (this qn-run reads version 1)");
  PlanManifest m;
  m.dir = dir.str();
  auto tp = o->getInteger("tp");
  auto id = o->getString("plan_id");
  const llvm::json::Array *ranks = o->getArray("ranks");
  if (!tp || *tp < 1 || *tp > 4096 || !id || !ranks)
    return fail("'" + path + "': missing or invalid tp, plan_id or ranks");
  m.tp = static_cast<int>(*tp);
  m.planId = id->str();
  if (ranks->size() != static_cast<size_t>(m.tp))
    return fail("'" + path + "': tp is " + llvm::Twine(m.tp) + " but " +
                llvm::Twine(ranks->size()) + " ranks are listed");
  for (const llvm::json::Value &r : *ranks) {
    const llvm::json::Object *ro = r.getAsObject();
    auto model = ro ? ro->getString("model") : llvm::None;
    auto weights = ro ? ro->getString("weights") : llvm::None;
    if (!model || !weights || !plainName(*model) || !plainName(*weights))
      return fail("'" + path + "': a rank entry lacks model/weights or names a file outside the "
                  "plan folder");
    m.rankModels.push_back(model->str());
    m.rankWeights.push_back(weights->str());
  }
  auto ins = readValues(*o, "inputs", path);
  if (!ins)
    return ins.takeError();
  auto outs = readValues(*o, "outputs", path);
  if (!outs)
    return outs.takeError();
  m.inputs = std::move(*ins);
  m.outputs = std::move(*outs);
  m.sourceModel = o->getString("source_model").getValueOr("").str();
  if (const llvm::json::Object *t = o->getObject("training")) {
    auto tm = std::make_shared<TrainingManifest>();
    auto str = [&](llvm::StringRef key) { return t->getString(key).getValueOr("").str(); };
    auto num = [&](llvm::StringRef key) { return t->getNumber(key).getValueOr(0.0); };
    tm->loss = str("loss");
    tm->correct = str("correct");
    tm->labels = str("labels");
    tm->logits = str("logits");
    tm->lrInput = str("lr_input");
    tm->stepInput = str("step_input");
    tm->optimizer = str("optimizer");
    tm->schedule = str("lr_schedule");
    tm->classes = t->getInteger("classes").getValueOr(0);
    tm->ignoreIndex = t->getInteger("ignore_index").getValueOr(-100);
    tm->warmupSteps = t->getInteger("warmup_steps").getValueOr(0);
    tm->lr = num("lr");
    tm->momentum = num("momentum");
    tm->weightDecay = num("weight_decay");
    tm->clipGradNorm = num("clip_grad_norm");
    const llvm::json::Array *state = t->getArray("state");
    if (tm->loss.empty() || tm->labels.empty() || tm->lrInput.empty() || tm->classes < 1 ||
        !state || tm->warmupSteps < 0)
      return fail("'" + path + "': the training section lacks loss, labels, lr_input, classes "
                  "or state");
    for (const llvm::json::Value &v : *state) {
      const llvm::json::Object *so = v.getAsObject();
      if (!so || !so->getString("name") || !so->getString("update"))
        return fail("'" + path + "': a training state entry lacks name or update");
      TrainingManifest::State st;
      st.name = so->getString("name")->str();
      st.update = so->getString("update")->str();
      st.param = so->getString("param").getValueOr("").str();
      st.kind = so->getString("kind").getValueOr("").str();
      st.source = so->getString("source").getValueOr("").str();
      st.sourceScale = so->getNumber("source_scale").getValueOr(1.0);
      st.sourceRows = so->getInteger("source_rows").getValueOr(-1);
      tm->state.push_back(std::move(st));
    }
    if (const llvm::json::Array *tied = t->getArray("tied"))
      for (const llvm::json::Value &v : *tied)
        if (const llvm::json::Object *to = v.getAsObject())
          if (auto copy = to->getString("copy"), of = to->getString("transpose_of"); copy && of)
            tm->tied.push_back({copy->str(), of->str()});
    m.training = std::move(tm);
  }
  return m;
}

double TrainingManifest::lrAt(int64_t step, int64_t total) const {
  if (warmupSteps > 0 && step <= warmupSteps)
    return lr * static_cast<double>(step) / static_cast<double>(warmupSteps);
  if (schedule != "cosine" || total <= warmupSteps)
    return lr;
  double progress = static_cast<double>(step - warmupSteps) / static_cast<double>(total - warmupSteps);
  return lr * 0.5 * (1.0 + std::cos(M_PI * progress));
}

llvm::Expected<RankProgram> loadRank(const PlanManifest &plan, int rank) {
  if (rank < 0 || rank >= plan.tp)
    return fail("rank " + llvm::Twine(rank) + " is outside the plan's " + llvm::Twine(plan.tp) +
                " ranks");
  llvm::SmallString<256> modelPath(plan.dir), binPath(plan.dir);
  llvm::sys::path::append(modelPath, plan.rankModels[rank]);
  llvm::sys::path::append(binPath, plan.rankWeights[rank]);
  auto model = llvm::MemoryBuffer::getFile(modelPath, false, false);
  if (!model)
    return fail("cannot read '" + modelPath + "': " + model.getError().message());
  // The weights stay mapped for the life of the program; tensors view them.
  auto bin = llvm::MemoryBuffer::getFile(binPath, false, false);
  if (!bin)
    return fail("cannot read '" + binPath + "': " + bin.getError().message());
  return loadRankFromBuffers(plan, rank, (*model)->getBuffer(),
                             std::shared_ptr<llvm::MemoryBuffer>(std::move(*bin)));
}

llvm::Error RankProgram::makeState(llvm::StringRef name) {
  auto it = constants.find(name);
  if (it == constants.end())
    return fail("cannot make '" + name + "' mutable state: the rank program has no initializer " +
                "of that name");
  if (!state.insert(name).second)
    return llvm::Error::success();
  it->second = it->second.clone();
  return llvm::Error::success();
}

llvm::Expected<RankProgram> loadRankFromBuffers(const PlanManifest &plan, int rank,
                                                llvm::StringRef modelBytes,
                                                std::shared_ptr<llvm::MemoryBuffer> bin) {
  if (rank < 0 || rank >= plan.tp)
    return fail("rank " + llvm::Twine(rank) + " is outside the plan's " + llvm::Twine(plan.tp) +
                " ranks");
  std::string modelPath = plan.dir + "/" + plan.rankModels[rank];
  std::string binPath = plan.dir + "/" + plan.rankWeights[rank];
  RankProgram prog;
  if (modelBytes.size() > INT32_MAX ||
      !prog.model.ParseFromArray(modelBytes.data(), static_cast<int>(modelBytes.size())))
    return fail("'" + modelPath + "' is not a valid ONNX model");
  struct Range {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Range> ranges;
  const uint64_t binSize = bin->getBufferSize();
  for (const onnx::TensorProto &t : prog.model.graph().initializer()) {
    if (t.data_location() != onnx::TensorProto::EXTERNAL) {
      auto tensor = tensorFromProto(t);
      if (!tensor)
        return fail("'" + modelPath + "': " + llvm::toString(tensor.takeError()));
      prog.constants[t.name()] = std::move(*tensor);
      continue;
    }
    std::string location;
    uint64_t offset = 0, length = 0;
    bool haveLength = false;
    for (const auto &kv : t.external_data()) {
      if (kv.key() == "location")
        location = kv.value();
      else if (kv.key() == "offset" && llvm::StringRef(kv.value()).getAsInteger(10, offset))
        return fail("'" + modelPath + "': tensor '" + t.name() + "' has a malformed offset");
      else if (kv.key() == "length") {
        if (llvm::StringRef(kv.value()).getAsInteger(10, length))
          return fail("'" + modelPath + "': tensor '" + t.name() + "' has a malformed length");
        haveLength = true;
      }
    }
    if (location != plan.rankWeights[rank])
      return fail("'" + modelPath + "': tensor '" + t.name() + "' refers to '" + location +
                  "'; a rank plan may only use its own weights file '" +
                  plan.rankWeights[rank] + "'");
    DType dt = dtypeFromOnnx(t.data_type());
    if (dt == DType::Undefined)
      return fail("'" + modelPath + "': tensor '" + t.name() + "' has an unsupported type");
    std::vector<int64_t> dims(t.dims().begin(), t.dims().end());
    uint64_t numel = 1;
    for (int64_t d : dims) {
      if (d < 0 || (d && numel > UINT64_MAX / static_cast<uint64_t>(d)))
        return fail("'" + modelPath + "': tensor '" + t.name() + "' has invalid dims");
      numel *= static_cast<uint64_t>(d);
    }
    uint64_t need = numel * dtypeSize(dt);
    if (!haveLength)
      length = need;
    if (length != need || offset > binSize || length > binSize - offset)
      return fail("'" + modelPath + "': tensor '" + t.name() + "' needs bytes [" +
                  llvm::Twine(offset) + ", " + llvm::Twine(offset + need) + ") of '" + binPath +
                  "' (" + llvm::Twine(binSize) + " bytes); the plan is damaged");
    ranges.push_back({offset, offset + length, t.name()});
    void *data = const_cast<char *>(bin->getBufferStart() + offset);
    prog.constants[t.name()] = Tensor::view(dt, dims, data, bin);
  }
  std::sort(ranges.begin(), ranges.end(),
            [](const Range &a, const Range &b) { return a.begin < b.begin; });
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].begin < ranges[i - 1].end && ranges[i].end > ranges[i].begin)
      return fail("'" + modelPath + "': tensors '" + ranges[i - 1].name + "' and '" +
                  ranges[i].name + "' overlap in '" + binPath + "'; the plan is damaged");
  return prog;
}

llvm::Error checkInputs(const PlanManifest &plan, const llvm::StringMap<Tensor> &inputs) {
  auto expected = [&] {
    std::string s;
    for (const PlanValue &v : plan.inputs)
      s += (s.empty() ? "" : ", ") + v.name + ": " + v.describe();
    return s;
  };
  llvm::StringSet<> known;
  for (const PlanValue &v : plan.inputs)
    known.insert(v.name);
  for (const auto &kv : inputs)
    if (!known.contains(kv.getKey()))
      return fail("unknown input '" + kv.getKey() + "'; the plan expects " + expected());
  llvm::StringMap<int64_t> symbols;
  for (const PlanValue &v : plan.inputs) {
    auto it = inputs.find(v.name);
    if (it == inputs.end())
      return fail("missing input '" + v.name + "' (" + v.describe() +
                  "); pass it with --input " + v.name + "=FILE.npy; the plan expects " +
                  expected());
    const Tensor &t = it->second;
    auto mismatch = [&](const llvm::Twine &what) {
      return fail("input '" + v.name + "': " + what + ": expected " + v.describe() + ", got " +
                  t.describe());
    };
    if (t.dtype() != v.dtype)
      return mismatch("wrong dtype");
    if (t.rank() != static_cast<int64_t>(v.dims.size()))
      return mismatch("wrong rank");
    for (size_t i = 0; i < v.dims.size(); ++i) {
      int64_t got = t.shape()[i];
      if (v.dims[i] >= 0 && got != v.dims[i])
        return mismatch("wrong size of axis " + llvm::Twine(i));
      if (v.dims[i] < 0 && !v.symbols[i].empty()) {
        auto [sit, inserted] = symbols.insert({v.symbols[i], got});
        if (!inserted && sit->second != got)
          return mismatch("'" + v.symbols[i] + "' is " + llvm::Twine(sit->second) +
                          " in another input but " + llvm::Twine(got) + " here");
      }
    }
  }
  return llvm::Error::success();
}

} // namespace qn::rt
