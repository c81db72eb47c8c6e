//===- Dataset.h - Training data files ---------------------------*- C++ -*-===//
#pragma once
#include "qn/runtime/Tensor.h"

#include "llvm/Support/Error.h"

namespace qn::rt {

/// A dataset file as one tensor whose axis 0 is the samples: a .npy file;
/// an array of a .npz (`FILE.npz:NAME`, or `FILE.npz` holding one array;
/// stored or deflated); or an MNIST IDX file (`*-idx3-ubyte` images become
/// float32 in [0, 1], `*-idx1-ubyte` labels int64). .npy and IDX files may
/// be gzip-compressed (.gz).
llvm::Expected<Tensor> loadDataset(llvm::StringRef spec);

/// Rows `rows` of `data` (axis 0), in that order, as a new tensor.
Tensor gatherRows(const Tensor &data, llvm::ArrayRef<int64_t> rows);

} // namespace qn::rt
