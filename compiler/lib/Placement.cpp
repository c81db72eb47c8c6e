//===- Placement.cpp ------------------------------------------------------===//
#include "qn/compiler/Placement.h"

#include <cstdio>

namespace qn {

bool Placement::parse(const std::string &text, Placement &out) {
  if (text == "R" || text == "P") {
    out = text == "R" ? R() : P();
    return true;
  }
  int axis = -1, blocks = 1;
  char tail = 0;
  int n = 0;
  if (std::sscanf(text.c_str(), "S(%d)%n", &axis, &n) != 1 || axis < 0 || n <= 0)
    return false;
  std::string rest = text.substr(static_cast<size_t>(n));
  if (!rest.empty() && rest[0] == '/') {
    int size = 0;
    if (std::sscanf(rest.c_str(), "/%d%c", &size, &tail) != 1 || size < 1 ||
        rest != "/" + std::to_string(size))
      return false;
    out = Merged(axis, size);
    return true;
  }
  if (!rest.empty() &&
      (std::sscanf(rest.c_str(), "x%d%c", &blocks, &tail) != 1 || blocks < 1 ||
       rest != "x" + std::to_string(blocks)))
    return false;
  out = S(axis, blocks);
  return true;
}

std::string Placement::str() const {
  switch (kind) {
  case Kind::Replicated:
    return "R";
  case Kind::Partial:
    return "P";
  case Kind::Shard:
    return "S(" + std::to_string(axis) + ")" +
           (blocks > 1   ? "x" + std::to_string(blocks)
            : blocks < 0 ? "/" + std::to_string(-blocks)
                         : std::string());
  }
  return "?";
}

Redistribution redistribution(const Placement &from, const Placement &to) {
  if (from == to)
    return Redistribution::None;
  if (to.isPartial())
    return Redistribution::Invalid;
  if (from.isPartial())
    return to.isReplicated() ? Redistribution::AllReduce : Redistribution::ReduceScatter;
  if (from.isShard())
    return to.isReplicated() ? Redistribution::AllGather : Redistribution::GatherSlice;
  return Redistribution::LocalSlice; // R -> S(d)
}

const char *redistributionName(Redistribution r) {
  switch (r) {
  case Redistribution::None:
    return "none";
  case Redistribution::AllReduce:
    return "AllReduce";
  case Redistribution::ReduceScatter:
    return "ReduceScatter";
  case Redistribution::AllGather:
    return "AllGather";
  case Redistribution::LocalSlice:
    return "LocalSlice";
  case Redistribution::GatherSlice:
    return "AllGather+LocalSlice";
  case Redistribution::Invalid:
    return "invalid";
  }
  return "?";
}

double redistributionBytesPerRank(Redistribution r, double bytes, int tp) {
  if (tp <= 1)
    return 0;
  double frac = double(tp - 1) / tp;
  switch (r) {
  case Redistribution::AllReduce:
    return 2 * frac * bytes; // reduce-scatter + all-gather
  case Redistribution::ReduceScatter:
  case Redistribution::AllGather:
  case Redistribution::GatherSlice:
    return frac * bytes;
  default:
    return 0;
  }
}

} // namespace qn
