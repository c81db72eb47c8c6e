//===- TrainLoop.cpp - qn-run --train -------------------------------------===//
//
// A training plan (qn-compile --train) is one step: forward, loss, backward
// and optimizer update; its extra outputs are the new values of the mutable
// state (parameters, optimizer moments). The loop binds a batch, the step's
// learning rate and step number and runs the plan; the runner writes each
// update into its state (RankProgram::makeState; Runner::bindUpdate) where
// the step runs (host memory, or the GPU with --device cuda), so parameters
// stay resident and the batch is the only per-step traffic. Every rank
// draws the same batches in the same order.
//
//===----------------------------------------------------------------------===//
#include "qn/runtime/RankRunner.h"

#include "qn/runtime/Communicator.h"
#include "qn/runtime/Dataset.h"
#include "qn/runtime/Executor.h"
#include "qn/runtime/TensorProto.h"

#include "llvm/ADT/StringSet.h"
#include "llvm/Support/MemoryBuffer.h"
#include <onnx/onnx_pb.h>

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/SHA256.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

namespace qn::rt {
namespace {

llvm::Error fail(const llvm::Twine &msg) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), msg);
}

Tensor scalarFloat(double v) {
  Tensor t = Tensor::empty(DType::Float, {});
  *t.data<float>() = static_cast<float>(v);
  return t;
}

std::string digestOf(const Tensor &t) {
  return llvm::toHex(llvm::SHA256::hash(llvm::ArrayRef<uint8_t>(
      static_cast<const uint8_t *>(t.raw()), t.nbytes())));
}

/// The axis of an "S(d)" or blocked "S(d)xk" placement (-1 for "R") and its
/// block count.
std::pair<int, int> shardOf(const PlanManifest &plan, const std::string &output) {
  for (const PlanValue &pv : plan.outputs)
    if (pv.name == output && !pv.replicated()) {
      int d = -1, k = 1;
      if (sscanf(pv.placement.c_str(), "S(%d)x%d", &d, &k) >= 1)
        return {d, k};
    }
  return {-1, 1};
}

/// An all-gathered blocked tensor holds, per rank, its slice of each of `k`
/// blocks along `axis`; puts each block's slices back together.
Tensor unblock(const Tensor &g, int axis, int k, int world) {
  if (k <= 1)
    return g;
  int64_t outer = 1, inner = 1, A = g.dim(axis);
  for (int64_t i = 0; i < axis; ++i)
    outer *= g.dim(i);
  for (int64_t i = axis + 1; i < g.rank(); ++i)
    inner *= g.dim(i);
  size_t es = dtypeSize(g.dtype());
  int64_t piece = A / (int64_t(world) * k); // one rank's slice of one block
  Tensor out = Tensor::empty(g.dtype(), g.shape());
  const char *src = static_cast<const char *>(g.raw());
  char *dst = static_cast<char *>(out.raw());
  for (int64_t o = 0; o < outer; ++o)
    for (int r = 0; r < world; ++r)
      for (int j = 0; j < k; ++j) {
        int64_t from = r * (A / world) + j * piece, to = j * (A / k) + r * piece;
        std::memcpy(dst + ((o * A + to) * inner) * es, src + ((o * A + from) * inner) * es,
                    size_t(piece * inner) * es);
      }
  return out;
}

std::string joinPath(llvm::StringRef a, llvm::StringRef b) {
  llvm::SmallString<256> p(a);
  llvm::sys::path::append(p, b);
  return std::string(p);
}

llvm::Error writeFileAtomically(const std::string &path, llvm::StringRef bytes) {
  std::string tmp = path + ".qn-tmp";
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(tmp, ec);
    if (ec)
      return fail("cannot write '" + tmp + "': " + ec.message());
    os << bytes;
    os.close();
    if (os.has_error()) {
      os.clear_error();
      llvm::sys::fs::remove(tmp);
      return fail("cannot write '" + tmp + "'");
    }
  }
  if (auto ec = llvm::sys::fs::rename(tmp, path)) {
    llvm::sys::fs::remove(tmp);
    return fail("cannot rename '" + tmp + "': " + ec.message());
  }
  return llvm::Error::success();
}

/// --save: every rank takes part in gathering the sharded parameters; rank 0
/// writes the source model with them (unsharded, unscaled), atomically.
/// The host tensors `part` of every rank concatenated along `axis`, through
/// the rendezvous store (a GPU run's communicator moves device memory only).
llvm::Expected<Tensor> gatherThroughStore(Communicator &comm, const Tensor &part, int axis,
                                          const std::string &key) {
  auto all = comm.exchange(key, std::string(static_cast<const char *>(part.raw()), part.nbytes()));
  if (!all)
    return all.takeError();
  const int world = comm.size();
  std::vector<int64_t> shape = part.shape();
  int64_t outer = 1;
  for (int d = 0; d < axis; ++d)
    outer *= shape[d];
  size_t inner = outer ? part.nbytes() / static_cast<size_t>(outer) : 0;
  shape[axis] *= world;
  Tensor whole = Tensor::empty(part.dtype(), shape);
  for (int r = 0; r < world; ++r) {
    const std::string &b = (*all)[r];
    if (b.size() != part.nbytes())
      return fail("--save: rank " + llvm::Twine(r) + " sent " + llvm::Twine(b.size()) +
                  " bytes of '" + key + "', not " + llvm::Twine(part.nbytes()));
    for (int64_t o = 0; o < outer; ++o)
      std::memcpy(static_cast<char *>(whole.raw()) + (o * world + r) * inner,
                  b.data() + o * inner, inner);
  }
  return whole;
}

llvm::Error saveTrained(const PlanManifest &plan, int rank, Communicator *comm,
                        const std::vector<Tensor> &bufs, const std::string &path,
                        bool hostCollectives) {
  const TrainingManifest &t = *plan.training;
  llvm::StringMap<Tensor> full;
  for (size_t i = 0; i < t.state.size(); ++i) {
    const TrainingManifest::State &s = t.state[i];
    if (s.kind != "param")
      continue;
    auto [axis, blocks] = shardOf(plan, s.update);
    Tensor whole = bufs[i];
    if (axis >= 0) {
      if (!comm)
        return fail("internal: a sharded parameter without a communicator");
      if (hostCollectives) {
        if (auto err = comm->allGather(bufs[i], whole, axis))
          return err;
      } else {
        auto w = gatherThroughStore(*comm, bufs[i], axis, "qn/train/save/" + s.name);
        if (!w)
          return w.takeError();
        whole = std::move(*w);
      }
      whole = unblock(whole, axis, blocks, comm->size());
    }
    if (s.sourceRows >= 0) { // a padded vocabulary: its first rows are the source's
      if (whole.rank() < 1 || s.sourceRows > whole.dim(0))
        return fail("--save: '" + s.param + "' has " + whole.describe() + ", fewer than its " +
                    llvm::Twine(s.sourceRows) + " source rows");
      std::vector<int64_t> shape = whole.shape();
      shape[0] = s.sourceRows;
      Tensor cut = Tensor::empty(whole.dtype(), shape);
      std::memcpy(cut.raw(), whole.raw(), cut.nbytes());
      whole = std::move(cut);
    }
    whole = whole.clone();
    if (s.sourceScale != 1.0)
      for (int64_t k = 0; k < whole.numel(); ++k)
        whole.data<float>()[k] = static_cast<float>(whole.data<float>()[k] / s.sourceScale);
    full[s.source.empty() ? s.param : s.source] = std::move(whole);
  }
  if (rank != 0)
    return llvm::Error::success();
  for (const auto &[copy, of] : t.tied) {
    auto it = full.find(of);
    if (it == full.end() || it->second.rank() != 2)
      continue;
    const Tensor &a = it->second;
    Tensor b = Tensor::empty(a.dtype(), {a.dim(1), a.dim(0)});
    size_t es = dtypeSize(a.dtype());
    for (int64_t i = 0; i < a.dim(0); ++i)
      for (int64_t j = 0; j < a.dim(1); ++j)
        std::memcpy(static_cast<char *>(b.raw()) + (j * a.dim(0) + i) * es,
                    static_cast<const char *>(a.raw()) + (i * a.dim(1) + j) * es, es);
    full[copy] = std::move(b);
  }
  auto bytes = llvm::MemoryBuffer::getFile(plan.sourceModel);
  if (!bytes)
    return fail("--save: cannot read the source model '" + plan.sourceModel +
                "' (plan.json source_model): " + bytes.getError().message());
  onnx::ModelProto m;
  if ((*bytes)->getBufferSize() > size_t(INT32_MAX) ||
      !m.ParseFromArray((*bytes)->getBufferStart(), static_cast<int>((*bytes)->getBufferSize())))
    return fail("--save: the source model '" + plan.sourceModel +
                "' is not a binary ONNX model (an .onnxtext source cannot be saved into)");
  onnx::GraphProto &g = *m.mutable_graph();
  llvm::StringSet<> done;
  for (auto &init : *g.mutable_initializer()) {
    auto it = full.find(init.name());
    if (it == full.end())
      continue;
    if (init.data_location() == onnx::TensorProto::EXTERNAL)
      return fail("--save: parameter '" + init.name() +
                  "' of the source model is external data; saving into such models is not "
                  "supported yet");
    onnx::TensorProto fresh = tensorToProto(it->second, init.name());
    bool sameDims = fresh.dims_size() == init.dims_size() &&
                    std::equal(fresh.dims().begin(), fresh.dims().end(), init.dims().begin());
    if (fresh.data_type() != init.data_type() || !sameDims)
      return fail("--save: parameter '" + init.name() + "' does not match the source model's");
    init = std::move(fresh);
    done.insert(init.name());
  }
  // Parameters the exporter wrote as Identity copies of an equal
  // initializer: trained apart, they become initializers of their own.
  auto *nodes = g.mutable_node();
  for (int i = nodes->size() - 1; i >= 0; --i) {
    const onnx::NodeProto &n = nodes->Get(i);
    if (n.op_type() != "Identity" || n.output_size() != 1)
      continue;
    auto it = full.find(n.output(0));
    if (it == full.end() || done.contains(n.output(0)))
      continue;
    *g.add_initializer() = tensorToProto(it->second, n.output(0));
    done.insert(n.output(0));
    nodes->DeleteSubrange(i, 1);
  }
  for (const auto &kv : full)
    if (!done.contains(kv.getKey()))
      return fail("--save: parameter '" + kv.getKey() + "' is not in the source model '" +
                  plan.sourceModel + "'");
  std::string out;
  if (!m.SerializeToString(&out))
    return fail("--save: the trained model does not serialize (over 2 GiB?)");
  if (auto err = writeFileAtomically(path, out))
    return fail("--save '" + path + "': " + llvm::toString(std::move(err)));
  return llvm::Error::success();
}

/// What a checkpoint records besides the state (the data position is the
/// step: batches and order follow from it, the batch size and the seed).
struct CheckpointInfo {
  std::string planId;
  int64_t step = 0, batch = 0, shuffleSeed = -1;
  std::vector<std::pair<std::string, int64_t>> state; // name, bytes per rank
};

/// Every rank writes DIR/step-S.tmp/rankK.bin (its state buffers in plan
/// order); after all have (a barrier), rank 0 writes the manifest, renames
/// the folder to DIR/step-S and points DIR/latest at it. A rank killed
/// before the rename leaves the previous checkpoint the latest.
llvm::Error writeCheckpoint(const std::string &dir, int rank, int world, Communicator *comm,
                            const CheckpointInfo &info, const std::vector<Tensor> &bufs) {
  std::string name = "step-" + std::to_string(info.step);
  std::string tmpDir = joinPath(dir, name + ".tmp"), finalDir = joinPath(dir, name);
  if (auto ec = llvm::sys::fs::create_directories(tmpDir))
    return fail("--checkpoint '" + dir + "': " + ec.message());
  std::string bytes;
  for (const Tensor &t : bufs)
    bytes.append(static_cast<const char *>(t.raw()), t.nbytes());
  if (auto err = writeFileAtomically(joinPath(tmpDir, "rank" + std::to_string(rank) + ".bin"),
                                     bytes))
    return fail("--checkpoint: " + llvm::toString(std::move(err)));
  auto barrier = [&](llvm::StringRef what) -> llvm::Error {
    if (!comm || world < 2)
      return llvm::Error::success();
    auto all = comm->exchange(("qn/ckpt/" + what + "/" + name).str(), "ok");
    return all ? llvm::Error::success() : all.takeError();
  };
  if (auto err = barrier("written"))
    return err;
  if (rank == 0) {
    llvm::json::Array state;
    for (const auto &[n, b] : info.state)
      state.push_back(llvm::json::Object{{"name", n}, {"bytes", b}});
    llvm::json::Object m{{"format", "quintnet-checkpoint"},
                         {"plan_id", info.planId},
                         {"step", info.step},
                         {"batch", info.batch},
                         {"shuffle_seed", info.shuffleSeed},
                         {"world_size", world},
                         {"state", std::move(state)}};
    std::string text;
    llvm::raw_string_ostream os(text);
    os << llvm::formatv("{0:2}", llvm::json::Value(std::move(m))) << "\n";
    os.flush();
    if (auto err = writeFileAtomically(joinPath(tmpDir, "checkpoint.json"), text))
      return fail("--checkpoint: " + llvm::toString(std::move(err)));
    llvm::sys::fs::remove_directories(finalDir); // a stale one from an earlier run
    if (auto ec = llvm::sys::fs::rename(tmpDir, finalDir))
      return fail("--checkpoint: cannot rename '" + tmpDir + "': " + ec.message());
    if (auto err = writeFileAtomically(joinPath(dir, "latest"), name + "\n"))
      return fail("--checkpoint: " + llvm::toString(std::move(err)));
  }
  return barrier("renamed");
}

/// The latest checkpoint in `dir` (its folder and step), checked against
/// this plan and run without reading the state: qn-run checks it before any
/// rank starts.
llvm::Expected<std::pair<std::string, int64_t>> findCheckpoint(const std::string &dir, int world,
                                                               const CheckpointInfo &want) {
  auto latest = llvm::MemoryBuffer::getFile(joinPath(dir, "latest"));
  if (!latest)
    return fail("--resume '" + dir + "': no checkpoint there (no 'latest' file)");
  std::string name = llvm::StringRef((*latest)->getBuffer()).trim().str();
  if (name.empty() || name.find('/') != std::string::npos || name.find("..") != std::string::npos)
    return fail("--resume '" + dir + "': 'latest' does not name a checkpoint folder");
  std::string ck = joinPath(dir, name);
  auto text = llvm::MemoryBuffer::getFile(joinPath(ck, "checkpoint.json"));
  if (!text)
    return fail("--resume: cannot read '" + joinPath(ck, "checkpoint.json") + "'");
  auto json = llvm::json::parse((*text)->getBuffer());
  const llvm::json::Object *o = json ? json->getAsObject() : nullptr;
  if (!json)
    llvm::consumeError(json.takeError());
  if (!o || o->getString("format") != llvm::Optional<llvm::StringRef>("quintnet-checkpoint"))
    return fail("--resume: '" + ck + "' is not a QuintNet checkpoint");
  std::string planId = o->getString("plan_id").getValueOr("").str();
  if (planId != want.planId)
    return fail("--resume: the checkpoint '" + ck + "' belongs to plan " +
                planId.substr(0, 12) + ", not to this plan " + want.planId.substr(0, 12));
  if (o->getInteger("world_size").getValueOr(-1) != world)
    return fail("--resume: the checkpoint '" + ck + "' was written by " +
                llvm::Twine(o->getInteger("world_size").getValueOr(-1)) + " ranks, not " +
                llvm::Twine(world));
  if (o->getInteger("batch").getValueOr(-1) != want.batch ||
      o->getInteger("shuffle_seed").getValueOr(-2) != want.shuffleSeed)
    return fail("--resume: the checkpoint '" + ck + "' was written with --batch " +
                llvm::Twine(o->getInteger("batch").getValueOr(-1)) + " and --shuffle " +
                llvm::Twine(o->getInteger("shuffle_seed").getValueOr(-2)) +
                "; resume with the same to continue exactly");
  int64_t step = o->getInteger("step").getValueOr(-1);
  const llvm::json::Array *state = o->getArray("state");
  if (step < 0 || !state || state->size() != want.state.size())
    return fail("--resume: '" + ck + "' does not hold this plan's training state");
  return std::make_pair(ck, step);
}

/// Reads this rank's state from the latest checkpoint in `dir` into `bufs`
/// after checking it belongs to this plan and run; returns its step.
llvm::Expected<int64_t> readCheckpoint(const std::string &dir, int rank, int world,
                                       const CheckpointInfo &want,
                                       std::vector<Tensor> &bufs) {
  auto found = findCheckpoint(dir, world, want);
  if (!found)
    return found.takeError();
  const auto &[ck, step] = *found;
  auto bin = llvm::MemoryBuffer::getFile(joinPath(ck, "rank" + std::to_string(rank) + ".bin"));
  if (!bin)
    return fail("--resume: '" + ck + "' has no file for rank " + llvm::Twine(rank));
  size_t off = 0;
  for (size_t i = 0; i < bufs.size(); ++i) {
    size_t n = bufs[i].nbytes();
    if (off + n > (*bin)->getBufferSize())
      return fail("--resume: '" + ck + "/rank" + llvm::Twine(rank) + ".bin' is truncated");
    std::memcpy(bufs[i].raw(), (*bin)->getBufferStart() + off, n);
    off += n;
  }
  if (off != (*bin)->getBufferSize())
    return fail("--resume: '" + ck + "/rank" + llvm::Twine(rank) +
                ".bin' does not match this plan's state sizes");
  return step;
}

} // namespace

llvm::Expected<llvm::StringMap<Tensor>> RankRunner::readDatasets(const PlanManifest &plan) const {
  if (!plan.training)
    return fail("the plan in '" + opts_.planDir +
                "' is an inference plan; --train needs one compiled with qn-compile --train");
  if (!opts_.train)
    return fail("the plan in '" + opts_.planDir +
                "' is a training plan: run it with --train (and --epochs or --steps)");
  if (!opts_.resumeDir.empty()) {
    CheckpointInfo want;
    want.planId = plan.planId;
    want.batch = opts_.batch;
    want.shuffleSeed = opts_.shuffleSeed;
    want.state.resize(plan.training->state.size());
    if (auto found = findCheckpoint(opts_.resumeDir, plan.tp, want); !found)
      return found.takeError();
  }
  auto data = readDatasetList(plan, opts_.inputs, "--input");
  if (!data || opts_.evalInputs.empty())
    return data;
  auto eval = readDatasetList(plan, opts_.evalInputs, "--eval");
  if (!eval)
    return eval.takeError();
  for (auto &kv : *eval)
    (*data)["eval/" + kv.getKey().str()] = std::move(kv.getValue());
  return data;
}

llvm::Expected<llvm::StringMap<Tensor>>
RankRunner::readDatasetList(const PlanManifest &plan, llvm::ArrayRef<std::string> args,
                            llvm::StringRef flag) const {
  const TrainingManifest &t = *plan.training;
  llvm::StringMap<Tensor> data;
  for (const std::string &arg : args) {
    auto [name, file] = llvm::StringRef(arg).split('=');
    if (name.empty() || file.empty())
      return fail(flag + " '" + arg + "' is not NAME=FILE");
    if (data.count(name))
      return fail("input '" + name + "' is given twice");
    auto d = loadDataset(file);
    if (!d)
      return fail("input '" + name + "': " + llvm::toString(d.takeError()));
    data[name] = std::move(*d);
  }
  int64_t samples = -1;
  std::string first;
  for (const PlanValue &v : plan.inputs) {
    if (v.name == t.lrInput || v.name == t.stepInput)
      continue;
    auto it = data.find(v.name);
    if (it == data.end())
      return fail("missing " + flag + " " + v.name + "=FILE (" + v.describe() + " per sample" +
                  (v.name == t.labels ? ", the labels" : "") +
                  "); a training plan takes a dataset file per data input and one for the labels");
    Tensor &d = it->second;
    if (d.rank() < 1 || d.dim(0) < 1)
      return fail("input '" + v.name + "': the dataset has no samples");
    if (samples < 0) {
      samples = d.dim(0);
      first = v.name;
    } else if (d.dim(0) != samples) {
      return fail("input '" + v.name + "' has " + llvm::Twine(d.dim(0)) + " samples but '" +
                  first + "' has " + llvm::Twine(samples));
    }
    if (d.dtype() != v.dtype)
      return fail("input '" + v.name + "': the dataset is " + dtypeName(d.dtype()) +
                  " but the plan expects " + v.describe());
    // Shape each sample as the plan's input (an image file of [N, 28, 28]
    // for a model input [batch, 784]).
    if (v.dims.size() >= 1) {
      int64_t per = 1;
      bool known = true;
      for (size_t i = 1; i < v.dims.size(); ++i) {
        known &= v.dims[i] >= 0;
        per *= v.dims[i];
      }
      if (known) {
        if (d.numel() != per * samples)
          return fail("input '" + v.name + "': a sample of the dataset has " +
                      llvm::Twine(d.numel() / samples) + " elements but the plan expects " +
                      v.describe() + " (" + llvm::Twine(per) + " per sample)");
        std::vector<int64_t> shape{samples};
        shape.insert(shape.end(), v.dims.begin() + 1, v.dims.end());
        d = d.reshaped(shape);
      }
    }
  }
  for (const auto &kv : data) {
    bool known = kv.getKey() != t.lrInput && kv.getKey() != t.stepInput &&
                 llvm::any_of(plan.inputs, [&](const PlanValue &v) { return v.name == kv.getKey(); });
    if (!known)
      return fail("input '" + kv.getKey() + "' is not a data input of the training plan");
  }
  const Tensor &labels = data[t.labels];
  const int64_t *l = labels.data<int64_t>();
  int64_t perSample = labels.numel() / samples;
  for (int64_t i = 0; i < labels.numel(); ++i)
    if ((l[i] < 0 || l[i] >= t.classes) && l[i] != t.ignoreIndex)
      return fail("labels: sample " + llvm::Twine(i / perSample) + " has label " +
                  llvm::Twine(l[i]) + ", outside [0, " + llvm::Twine(t.classes) +
                  ") (and not the ignore index " + llvm::Twine(t.ignoreIndex) + ")");
  return data;
}

llvm::Error RankRunner::trainRank(int rank, int world, const PlanManifest &plan,
                                  const llvm::StringMap<Tensor> &datasets, Communicator *comm,
                                  RankProgram program) {
  const TrainingManifest &t = *plan.training;
  if ((opts_.epochs > 0) == (opts_.steps > 0))
    return fail("--train needs exactly one of --epochs and --steps");
  if (opts_.batch < 1)
    return fail("--batch must be at least 1");
  for (const TrainingManifest::State &s : t.state)
    if (auto err = program.makeState(s.name))
      return fail("training state '" + s.name + "': " + llvm::toString(std::move(err)));
  // Parameters and optimizer state stay where the step runs (host memory or
  // the GPU); each run writes the updates into them (Runner::bindUpdate).
  KernelRegistry kernels;
  auto made = makeRunner(rank, std::move(program), comm, kernels);
  if (!made)
    return made.takeError();
  std::unique_ptr<Runner> runner = std::move(*made);
  Runner &run = *runner;
  const auto &names = run.outputNames();
  auto indexOf = [&](const std::string &n) -> int {
    for (size_t i = 0; i < names.size(); ++i)
      if (names[i] == n)
        return static_cast<int>(i);
    return -1;
  };
  int lossIdx = indexOf(t.loss);
  if (lossIdx < 0)
    return fail("the training plan has no output '" + t.loss + "' (the loss)");
  std::vector<Tensor> stateBufs;
  for (const TrainingManifest::State &s : t.state) {
    if (auto err = run.bindUpdate(s.update, s.name)) // names a missing update output
      return err;
    auto buf = run.readState(s.name);
    if (!buf)
      return buf.takeError();
    stateBufs.push_back(*buf);
  }
  // stateBufs: the state on the host. On the CPU device they are the live
  // buffers; on a GPU, copies refreshed before they are read.
  const bool hostState = opts_.device == RunDevice::Cpu;
  auto pullState = [&]() -> llvm::Error {
    if (hostState)
      return llvm::Error::success();
    for (size_t i = 0; i < stateBufs.size(); ++i) {
      auto buf = run.readState(t.state[i].name);
      if (!buf)
        return buf.takeError();
      stateBufs[i] = *buf;
    }
    return llvm::Error::success();
  };

  llvm::StringMap<Tensor> train, eval;
  for (const auto &kv : datasets) {
    llvm::StringRef key = kv.getKey();
    if (key.consume_front("eval/"))
      eval[key] = kv.getValue();
    else
      train[key] = kv.getValue();
  }
  int correctIdx = indexOf(t.correct);
  if (!eval.empty() && correctIdx < 0)
    return fail("--eval: the training plan has no accuracy output (recompile it with this "
                "qn-compile)");
  const int64_t N = train.find(t.labels)->second.dim(0);
  const int64_t B = opts_.batch;
  const int64_t perEpoch = (N + B - 1) / B;
  const int64_t total = opts_.steps > 0 ? opts_.steps : opts_.epochs * perEpoch;
  const int64_t epochs = (total + perEpoch - 1) / perEpoch;
  std::vector<int64_t> order(N);

  std::unique_ptr<llvm::raw_fd_ostream> lossLog;
  if (rank == 0 && !opts_.lossLog.empty()) {
    std::error_code ec;
    lossLog = std::make_unique<llvm::raw_fd_ostream>(opts_.lossLog, ec);
    if (ec)
      return fail("--loss-log '" + opts_.lossLog + "': " + ec.message());
    *lossLog << "step,loss\n";
  }
  auto say = [&](const llvm::Twine &msg) {
    if (rank != 0 || opts_.quiet)
      return;
    std::lock_guard<std::mutex> lock(printMu_);
    llvm::errs() << "qn-run: " << msg << "\n";
  };
  // Replicated state must stay bitwise equal on every rank.
  auto checkReplicas = [&](int64_t step) -> llvm::Error {
    if (!comm || world < 2)
      return llvm::Error::success();
    if (auto err = pullState())
      return err;
    std::string mine;
    for (size_t i = 0; i < t.state.size(); ++i) {
      bool replicated = false;
      for (const PlanValue &pv : plan.outputs)
        if (pv.name == t.state[i].update)
          replicated = pv.replicated();
      if (replicated)
        mine += digestOf(stateBufs[i]) + ";";
    }
    auto all = comm->exchange("qn/train/replicas/" + std::to_string(step), mine);
    if (!all)
      return all.takeError();
    for (int r = 1; r < world; ++r)
      if ((*all)[r] != (*all)[0])
        return fail("after step " + llvm::Twine(step) +
                    ": replicated parameters differ between rank 0 and rank " + llvm::Twine(r) +
                    " (a bug: please report it)");
    return llvm::Error::success();
  };

  // Evaluation: the same step with a learning rate of 0 whose updates are
  // not kept; loss weighted by each batch's counted labels.
  auto evaluate = [&](int64_t step, int64_t epoch) -> llvm::Error {
    const Tensor &labels = eval.find(t.labels)->second;
    int64_t n = labels.dim(0), perSample = labels.numel() / n;
    double lossSum = 0, correct = 0, counted = 0;
    std::vector<int64_t> rows;
    for (int64_t begin = 0; begin < n; begin += B) {
      rows.clear();
      for (int64_t i = begin; i < std::min(n, begin + B); ++i)
        rows.push_back(i);
      llvm::StringMap<Tensor> inputs;
      for (const auto &kv : eval)
        inputs[kv.getKey()] = gatherRows(kv.getValue(), rows);
      inputs[t.lrInput] = scalarFloat(0.0);
      if (!t.stepInput.empty())
        inputs[t.stepInput] = scalarFloat(static_cast<double>(std::max<int64_t>(1, step)));
      run.setCommitUpdates(false);
      auto outs = run.run(inputs);
      run.setCommitUpdates(true);
      if (!outs)
        return fail("--eval: " + llvm::toString(outs.takeError()));
      const int64_t *l = labels.data<int64_t>() + begin * perSample;
      double c = 0;
      for (int64_t i = 0; i < static_cast<int64_t>(rows.size()) * perSample; ++i)
        c += l[i] != t.ignoreIndex;
      if (c > 0)
        lossSum += *(*outs)[lossIdx].data<float>() * c;
      correct += *(*outs)[correctIdx].data<float>();
      counted += c;
    }
    say(llvm::formatv("eval after epoch {0} (step {1}): loss {2:F4}, accuracy {3:F2}% "
                      "({4} samples)",
                      epoch, step, counted ? lossSum / counted : NAN,
                      counted ? 100.0 * correct / counted : NAN, n));
    return llvm::Error::success();
  };

  say(llvm::formatv("training: {0} samples, batch {1}, {2} steps ({3} per epoch), {4} {5}, "
                    "{6} ranks",
                    N, B, total, perEpoch, t.optimizer, t.schedule, world));
  auto start = std::chrono::steady_clock::now();
  auto lastPrint = start;
  double epochLoss = 0;
  int64_t epochSteps = 0, samplesDone = 0;
  CheckpointInfo ckInfo;
  ckInfo.planId = plan.planId;
  ckInfo.batch = B;
  ckInfo.shuffleSeed = opts_.shuffleSeed;
  for (const TrainingManifest::State &st : t.state)
    ckInfo.state.push_back({st.name, 0});
  int64_t firstStep = 0;
  if (!opts_.resumeDir.empty()) {
    auto resumed = readCheckpoint(opts_.resumeDir, rank, world, ckInfo, stateBufs);
    if (!resumed)
      return resumed.takeError();
    firstStep = *resumed;
    if (!hostState)
      for (size_t i = 0; i < stateBufs.size(); ++i)
        if (auto err = run.writeState(t.state[i].name, stateBufs[i]))
          return err;
    if (firstStep >= total)
      return fail("--resume: the checkpoint is at step " + llvm::Twine(firstStep) +
                  ", not before the last step " + llvm::Twine(total));
    say(llvm::formatv("resumed from step {0} ({1})", firstStep, opts_.resumeDir));
  }
  for (int64_t step = firstStep; step < total; ++step) {
    int64_t epoch = step / perEpoch, pos = step % perEpoch;
    if (pos == 0 || step == firstStep) {
      std::iota(order.begin(), order.end(), 0);
      if (opts_.shuffleSeed >= 0) {
        // Seeded by (seed, epoch) alone: a resumed run draws the same order.
        std::mt19937_64 rng(static_cast<uint64_t>(opts_.shuffleSeed) * 1000003u +
                            static_cast<uint64_t>(epoch));
        for (int64_t i = N - 1; i > 0; --i)
          std::swap(order[i], order[std::uniform_int_distribution<int64_t>(0, i)(rng)]);
      }
      epochLoss = 0;
      epochSteps = 0;
    }
    int64_t begin = pos * B, end = std::min(N, begin + B);
    llvm::ArrayRef<int64_t> rows(order.data() + begin, order.data() + end);
    llvm::StringMap<Tensor> inputs;
    for (const auto &kv : train)
      inputs[kv.getKey()] = gatherRows(kv.getValue(), rows);
    inputs[t.lrInput] = scalarFloat(t.lrAt(step + 1, total));
    if (!t.stepInput.empty())
      inputs[t.stepInput] = scalarFloat(static_cast<double>(step + 1));
    auto outs = run.run(inputs);
    if (!outs)
      return fail("step " + llvm::Twine(step + 1) + ": " + llvm::toString(outs.takeError()));
    const Tensor &lossT = (*outs)[lossIdx];
    double loss = lossT.numel() == 1 ? *lossT.data<float>() : NAN;
    if (!std::isfinite(loss))
      return fail("step " + llvm::Twine(step + 1) + " (epoch " + llvm::Twine(epoch + 1) +
                  "): the loss is " + (std::isnan(loss) ? "NaN" : "infinite") +
                  "; stopped before any checkpoint or --save of it (try a lower --lr, or "
                  "--clip-grad-norm)");
    epochLoss += loss;
    ++epochSteps;
    samplesDone += end - begin;
    if (lossLog)
      *lossLog << (step + 1) << "," << llvm::format("%.9g", loss) << "\n";
    auto now = std::chrono::steady_clock::now();
    bool epochEnd = pos == perEpoch - 1 || step == total - 1;
    if (epochEnd || now - lastPrint > std::chrono::seconds(2)) {
      lastPrint = now;
      double secs = std::chrono::duration<double>(now - start).count();
      double rate = secs > 0 ? samplesDone / secs : 0;
      double eta = step + 1 < total ? secs / (step + 1) * (total - step - 1) : 0;
      say(llvm::formatv("epoch {0}/{1} step {2}/{3} loss {4:F4} (epoch mean {5:F4}) "
                        "{6:F0} samples/s ETA {7:F0} s",
                        epoch + 1, epochs, step + 1, total, loss, epochLoss / epochSteps, rate,
                        eta));
    }
    bool checkpoint = !opts_.checkpointDir.empty() &&
                      ((opts_.checkpointEvery > 0 && (step + 1) % opts_.checkpointEvery == 0) ||
                       step + 1 == total);
    if (epochEnd || checkpoint)
      if (auto err = checkReplicas(step + 1))
        return err;
    if (checkpoint) {
      ckInfo.step = step + 1;
      if (auto err = pullState())
        return err;
      if (auto err = writeCheckpoint(opts_.checkpointDir, rank, world, comm, ckInfo, stateBufs))
        return err;
    }
    if (epochEnd) {
      if (!eval.empty())
        if (auto err = evaluate(step + 1, epoch + 1))
          return err;
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (opts_.profileRuns > 0) {
    // The step on the first batch, its updates dropped: where a step's time goes.
    llvm::StringMap<Tensor> inputs;
    std::vector<int64_t> rows;
    for (int64_t i = 0; i < std::min(N, B); ++i)
      rows.push_back(i);
    for (const auto &kv : train)
      inputs[kv.getKey()] = gatherRows(kv.getValue(), rows);
    inputs[t.lrInput] = scalarFloat(0.0);
    if (!t.stepInput.empty())
      inputs[t.stepInput] = scalarFloat(1.0);
    run.setCommitUpdates(false);
    if (auto err = profile(run, inputs, rank, world, comm, opts_.profileRuns, opts_.profileTrace,
                           printMu_))
      return err;
    run.setCommitUpdates(true);
  }
  say(llvm::formatv("trained {0} steps in {1:F2} s ({2:F0} samples/s)", total, secs,
                    secs > 0 ? samplesDone / secs : 0));
  if (!opts_.saveModel.empty()) {
    if (auto err = pullState())
      return err;
    if (auto err = saveTrained(plan, rank, comm, stateBufs, opts_.saveModel, hostState))
      return err;
    say("wrote the trained model to " + opts_.saveModel);
  }
  if (lossLog) {
    lossLog->close();
    if (lossLog->has_error())
      return fail("--loss-log '" + opts_.lossLog + "': write failed");
  }
  return llvm::Error::success();
}

} // namespace qn::rt
