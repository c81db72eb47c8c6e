//===- Import.cpp - ONNX model import -------------------------------------===//
#include "qn/compiler/Import.h"

#include <algorithm>
#include <tuple>

#include <onnx/checker.h>
#include <onnx/defs/parser.h>
#include <onnx/defs/schema.h>
#include <onnx/shape_inference/implementation.h>

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SHA256.h"

namespace qn {
namespace {


bool looksLikeText(llvm::StringRef path, llvm::StringRef bytes) {
  if (path.endswith(".onnxtext") || path.endswith(".onnxtxt"))
    return true;
  llvm::StringRef t = bytes.ltrim();
  return t.startswith("<");
}

template <typename Field>
void appendPod(std::string &raw, const Field &field, size_t width) {
  for (auto v : field) {
    auto x = v;
    raw.append(reinterpret_cast<const char *>(&x), width);
  }
}

/// Reads the external data of initializer `t`, checking that it stays inside
/// the model's folder and inside the data file.
struct ExternalRange {
  std::string file;
  uint64_t begin, end;
  std::string tensor;
};

/// Two tensors whose external bytes overlap are a malformed (or hostile)
/// model: reject them rather than alias one tensor's data into another.
llvm::Error checkOverlaps(std::vector<ExternalRange> ranges) {
  std::sort(ranges.begin(), ranges.end(), [](const ExternalRange &a, const ExternalRange &b) {
    return std::tie(a.file, a.begin, a.end) < std::tie(b.file, b.begin, b.end);
  });
  for (size_t i = 1; i < ranges.size(); ++i) {
    const ExternalRange &a = ranges[i - 1], &b = ranges[i];
    if (a.file == b.file && b.begin < a.end && b.end > b.begin && a.end > a.begin)
      return fail("tensors '" + a.tensor + "' and '" + b.tensor + "' overlap in '" + a.file +
                  "' (bytes [" + llvm::Twine(a.begin) + ", " + llvm::Twine(a.end) + ") and [" +
                  llvm::Twine(b.begin) + ", " + llvm::Twine(b.end) + "))");
  }
  return llvm::Error::success();
}

/// External data files, each mapped once per import.
using FileCache = llvm::StringMap<std::unique_ptr<llvm::MemoryBuffer>>;

llvm::Error loadExternalData(onnx::TensorProto &t, llvm::StringRef modelPath,
                             std::vector<ExternalRange> &ranges, FileCache &files) {
  std::string location;
  int64_t offset = 0, length = -1;
  for (const auto &kv : t.external_data()) {
    if (kv.key() == "location")
      location = kv.value();
    else if (kv.key() == "offset" || kv.key() == "length") {
      long long v;
      if (llvm::StringRef(kv.value()).getAsInteger(10, v) || v < 0)
        return fail("tensor '" + t.name() + "': external data " + kv.key() + " '" +
                    kv.value() + "' is not a non-negative integer");
      (kv.key() == "offset" ? offset : length) = v;
    }
  }
  if (location.empty())
    return fail("tensor '" + t.name() + "': external data without a location");
  if (llvm::sys::path::is_absolute(location) || llvm::StringRef(location).startswith("/"))
    return fail("tensor '" + t.name() + "': external data location '" + location +
                "' is absolute; only paths inside the model's folder are allowed");
  for (auto it = llvm::sys::path::begin(location), e = llvm::sys::path::end(location);
       it != e; ++it)
    if (*it == "..")
      return fail("tensor '" + t.name() + "': external data location '" + location +
                  "' leaves the model's folder ('..')");
  llvm::SmallString<256> dir(modelPath);
  llvm::sys::path::remove_filename(dir);
  if (dir.empty())
    dir = ".";
  llvm::SmallString<256> file(dir);
  llvm::sys::path::append(file, location);
  llvm::SmallString<256> realDir, realFile;
  if (llvm::sys::fs::real_path(dir, realDir) || llvm::sys::fs::real_path(file, realFile))
    return fail("tensor '" + t.name() + "': cannot open external data file '" + file + "'");
  if (!llvm::StringRef(realFile).startswith((realDir + "/").str()))
    return fail("tensor '" + t.name() + "': external data file '" + file +
                "' resolves outside the model's folder (symbolic link?)");
  std::unique_ptr<llvm::MemoryBuffer> &buf = files[realFile];
  if (!buf) {
    auto mapped = llvm::MemoryBuffer::getFile(realFile, /*IsText=*/false,
                                              /*RequiresNullTerminator=*/false);
    if (!mapped)
      return fail("tensor '" + t.name() + "': cannot read external data file '" + file +
                  "': " + mapped.getError().message());
    buf = std::move(*mapped);
  }
  uint64_t size = buf->getBufferSize();
  size_t esize = elemTypeSize(t.data_type());
  int64_t need = tensorNumElements(t) * static_cast<int64_t>(esize);
  if (length < 0)
    length = static_cast<int64_t>(size) - offset;
  if (static_cast<uint64_t>(offset) > size || static_cast<uint64_t>(length) > size - offset)
    return fail("tensor '" + t.name() + "': external data [" + llvm::Twine(offset) + ", " +
                llvm::Twine(offset + length) + ") runs past the end of '" + file + "' (" +
                llvm::Twine(size) + " bytes)");
  if (esize && length != need)
    return fail("tensor '" + t.name() + "': external data holds " + llvm::Twine(length) +
                " bytes but its shape needs " + llvm::Twine(need));
  ranges.push_back({realFile.str().str(), static_cast<uint64_t>(offset),
                    static_cast<uint64_t>(offset + length), t.name()});
  t.set_raw_data(buf->getBufferStart() + offset, length);
  t.clear_external_data();
  t.set_data_location(onnx::TensorProto::DEFAULT);
  return llvm::Error::success();
}

/// Constant nodes become initializers so that every constant is found the
/// same way.
llvm::Error foldConstantNodes(onnx::GraphProto &g, std::vector<std::string> &copies) {
  auto *nodes = g.mutable_node();
  for (int i = 0; i < nodes->size();) {
    const onnx::NodeProto &n = nodes->Get(i);
    if (n.op_type() == "Identity" && n.domain().empty() && n.input_size() == 1 &&
        n.output_size() == 1) {
      // The exporter dedups equal weights with Identity nodes: the output is
      // the same constant under another name.
      const onnx::TensorProto *src = nullptr;
      for (const auto &t : g.initializer())
        if (t.name() == n.input(0))
          src = &t;
      if (src) {
        onnx::TensorProto copy = *src;
        copy.set_name(n.output(0));
        copies.push_back(n.output(0));
        *g.add_initializer() = std::move(copy);
        nodes->DeleteSubrange(i, 1);
        continue;
      }
    }
    if (n.op_type() != "Constant" || !n.domain().empty() || n.output_size() != 1 ||
        n.attribute_size() != 1) {
      ++i;
      continue;
    }
    const onnx::AttributeProto &a = n.attribute(0);
    onnx::TensorProto t;
    if (a.name() == "value") {
      t = a.t();
    } else if (a.name() == "value_float") {
      t.set_data_type(onnx::TensorProto::FLOAT);
      t.add_float_data(a.f());
    } else if (a.name() == "value_floats") {
      t.set_data_type(onnx::TensorProto::FLOAT);
      t.add_dims(a.floats_size());
      for (float f : a.floats())
        t.add_float_data(f);
    } else if (a.name() == "value_int") {
      t.set_data_type(onnx::TensorProto::INT64);
      t.add_int64_data(a.i());
    } else if (a.name() == "value_ints") {
      t.set_data_type(onnx::TensorProto::INT64);
      t.add_dims(a.ints_size());
      for (int64_t v : a.ints())
        t.add_int64_data(v);
    } else {
      ++i;
      continue;
    }
    t.set_name(n.output(0));
    *g.add_initializer() = std::move(t);
    nodes->DeleteSubrange(i, 1);
  }
  return llvm::Error::success();
}

void readType(Value &v, const onnx::TypeProto &type) {
  if (!type.has_tensor_type())
    return;
  const auto &tt = type.tensor_type();
  if (tt.elem_type())
    v.elemType = tt.elem_type();
  if (!tt.has_shape())
    return;
  v.hasShape = true;
  v.shape.clear();
  for (const auto &d : tt.shape().dim()) {
    Dim dim;
    if (d.has_dim_value())
      dim.size = d.dim_value();
    else if (d.has_dim_param())
      dim.symbol = d.dim_param();
    v.shape.push_back(dim);
  }
}

} // namespace

/// Dims must be non-negative and their product, in bytes, must fit in an
/// int64 (found by fuzzing: hostile dims overflowed the element count).
static llvm::Error checkDims(const onnx::TensorProto &t) {
  int64_t bytes = static_cast<int64_t>(std::max<size_t>(1, elemTypeSize(t.data_type())));
  for (int64_t d : t.dims())
    if (d < 0 || __builtin_mul_overflow(bytes, d, &bytes))
      return fail("tensor '" + t.name() + "' has invalid dims (negative, or a size that "
                  "overflows)");
  return llvm::Error::success();
}

llvm::Error normalizeToRawData(onnx::TensorProto &t) {
  if (auto err = checkDims(t))
    return err;
  if (t.has_raw_data())
    return llvm::Error::success();
  std::string raw;
  switch (t.data_type()) {
  case onnx::TensorProto::FLOAT:
    appendPod(raw, t.float_data(), 4);
    break;
  case onnx::TensorProto::DOUBLE:
    appendPod(raw, t.double_data(), 8);
    break;
  case onnx::TensorProto::INT64:
    appendPod(raw, t.int64_data(), 8);
    break;
  case onnx::TensorProto::INT32:
    appendPod(raw, t.int32_data(), 4);
    break;
  case onnx::TensorProto::FLOAT16:
  case onnx::TensorProto::BFLOAT16:
    for (int32_t v : t.int32_data()) {
      uint16_t h = static_cast<uint16_t>(v);
      raw.append(reinterpret_cast<const char *>(&h), 2);
    }
    break;
  case onnx::TensorProto::INT8:
  case onnx::TensorProto::UINT8:
  case onnx::TensorProto::BOOL:
    for (int32_t v : t.int32_data())
      raw.push_back(static_cast<char>(v));
    break;
  default:
    return fail("tensor '" + t.name() + "' has unsupported data type " +
                elemTypeName(t.data_type()));
  }
  size_t need = static_cast<size_t>(tensorNumElements(t)) * elemTypeSize(t.data_type());
  if (raw.size() != need)
    return fail("tensor '" + t.name() + "' holds " + llvm::Twine(raw.size()) +
                " bytes of data but its shape needs " + llvm::Twine(need));
  t.clear_float_data();
  t.clear_double_data();
  t.clear_int64_data();
  t.clear_int32_data();
  t.set_raw_data(std::move(raw));
  return llvm::Error::success();
}

llvm::Expected<std::unique_ptr<Graph>> importModel(llvm::StringRef path) {
  auto buf = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                         /*RequiresNullTerminator=*/true);
  if (!buf)
    return fail("cannot read model '" + path + "': " + buf.getError().message());
  return importModelFromBuffer((*buf)->getBuffer(), path);
}

llvm::Expected<std::unique_ptr<Graph>> importModelFromBuffer(llvm::StringRef bytes,
                                                             llvm::StringRef path) {
  registerQuintNetSchemas();
  auto g = std::make_unique<Graph>();
  g->sourcePath = path.str();
  g->sourceSha256 = llvm::toHex(llvm::SHA256::hash(llvm::arrayRefFromStringRef(bytes)),
                                /*LowerCase=*/true);
  onnx::ModelProto &m = g->model;
  if (looksLikeText(path, bytes)) {
    std::string text = bytes.str(); // the parser needs a NUL-terminated copy
    std::string error;
    try {
      auto status = onnx::OnnxParser::Parse(m, text.c_str());
      if (!status.IsOK())
        error = status.ErrorMessage();
    } catch (const std::exception &e) {
      // ONNX's parser converts literals with std::stof and friends, which
      // throw on out-of-range values (found by fuzzing).
      error = std::string("malformed literal (") + e.what() + ")";
    }
    if (!error.empty())
      return fail("'" + path + "' is not a valid ONNX text model: " + error);
  } else {
    if (bytes.size() > static_cast<size_t>(INT32_MAX))
      return fail("'" + path + "' is larger than 2 GiB; keep the weights as external data");
    if (!m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
      return fail("'" + path + "' is not a valid ONNX model (protobuf parsing failed)");
  }
  if (!m.has_graph() || m.graph().node_size() == 0)
    return fail("'" + path + "' has no graph (or an empty one): is it an ONNX model?");

  onnx::GraphProto &gp = *m.mutable_graph();
  std::vector<ExternalRange> ranges;
  FileCache files;
  for (auto &init : *gp.mutable_initializer()) {
    if (auto err = checkDims(init))
      return fail("'" + path + "': " + llvm::toString(std::move(err)));
    if (init.data_location() == onnx::TensorProto::EXTERNAL)
      if (auto err = loadExternalData(init, path, ranges, files))
        return fail("'" + path + "': " + llvm::toString(std::move(err)));
    if (auto err = normalizeToRawData(init))
      return fail("'" + path + "': " + llvm::toString(std::move(err)));
  }
  if (auto err = checkOverlaps(std::move(ranges)))
    return fail("'" + path + "': " + llvm::toString(std::move(err)));
  for (const auto &init : gp.initializer())
    g->sourceInitializers.push_back(init.name());
  // The exporter's Identity copies of equal initializers (two LayerNorms
  // initialised alike) are distinct parameters of the source module.
  if (auto err = foldConstantNodes(gp, g->sourceInitializers))
    return err;
  for (auto &init : *gp.mutable_initializer())
    if (auto err = normalizeToRawData(init))
      return fail("'" + path + "': " + llvm::toString(std::move(err)));

  try {
    onnx::checker::check_model(m);
  } catch (const std::exception &e) {
    return fail("'" + path + "' fails the ONNX checker: " + e.what());
  }
  try {
    // No data propagation: ONNX 1.12's crashes on some models (found by
    // fuzzing); ShapeCompletion.cpp resolves the Shape->...->Reshape chains
    // we need instead.
    onnx::ShapeInferenceOptions opts{/*check_type=*/true, /*error_mode=*/1,
                                     /*enable_data_propagation=*/false};
    onnx::shape_inference::InferShapes(m, onnx::OpSchemaRegistry::Instance(), opts);
  } catch (const std::exception &e) {
    return fail("'" + path + "': shape inference failed: " + e.what());
  }

  // Build the IR.
  for (const auto &init : gp.initializer())
    g->sourceParamBytes += static_cast<int64_t>(init.raw_data().size());
  for (const auto &init : gp.initializer()) {
    Value *v = g->getOrCreate(init.name());
    v->constant = &init;
    v->elemType = init.data_type();
    v->hasShape = true;
    for (int64_t d : init.dims())
      v->shape.push_back(Dim{d, {}});
  }
  for (const auto &vi : gp.input()) {
    Value *v = g->getOrCreate(vi.name());
    if (v->constant)
      continue; // IR < 4: initializers listed as inputs
    readType(*v, vi.type());
    v->isGraphInput = true;
    g->inputs.push_back(v);
  }
  for (const auto &vi : gp.value_info())
    if (Value *v = g->getOrCreate(vi.name()); !v->constant)
      readType(*v, vi.type());
  for (const auto &vi : gp.output()) {
    Value *v = g->getOrCreate(vi.name());
    if (!v->constant)
      readType(*v, vi.type());
    v->isGraphOutput = true;
    g->outputs.push_back(v);
  }
  // Every node gets a name, so messages and plans can point at it.
  llvm::StringSet<> nodeNames;
  for (const auto &np : gp.node())
    if (!np.name().empty())
      nodeNames.insert(np.name());
  unsigned unnamed = 0;
  for (auto &np : *gp.mutable_node()) {
    if (!np.name().empty())
      continue;
    std::string name;
    do
      name = np.op_type() + "_" + std::to_string(unnamed++);
    while (nodeNames.contains(name));
    nodeNames.insert(name);
    np.set_name(name);
  }
  for (const auto &np : gp.node()) {
    auto node = std::make_unique<Node>();
    node->proto = np;
    for (const std::string &in : np.input())
      node->inputs.push_back(in.empty() ? nullptr : g->getOrCreate(in));
    for (const std::string &out : np.output()) {
      Value *v = out.empty() ? nullptr : g->getOrCreate(out);
      if (v)
        v->producer = node.get();
      node->outputs.push_back(v);
    }
    g->nodes.push_back(std::move(node));
  }
  g->rebuildUses();
  completeShapes(*g);
  return g;
}

} // namespace qn
