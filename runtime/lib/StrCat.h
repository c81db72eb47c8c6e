//===- StrCat.h - String concatenation for error messages ------*- C++ -*-===//
//
// Internal to runtime/lib. (llvm::formatv with integer arguments trips a false
// -Wmaybe-uninitialized in GCC 12 with LLVM 14's headers.)
//
//===----------------------------------------------------------------------===//
#pragma once
#include <string>
#include <type_traits>

#include "llvm/ADT/StringRef.h"

namespace qn::rt {
namespace detail {
inline void strAppend(std::string &s, llvm::StringRef v) { s.append(v.data(), v.size()); }
inline void strAppend(std::string &s, const std::string &v) { s += v; }
inline void strAppend(std::string &s, const char *v) { s += v; }
inline void strAppend(std::string &s, char v) { s += v; }
template <class T, std::enable_if_t<std::is_arithmetic_v<T> && !std::is_same_v<T, char> &&
                                        !std::is_same_v<T, bool>,
                                    int> = 0>
void strAppend(std::string &s, T v) {
  s += std::to_string(v);
}
} // namespace detail

/// Concatenates strings and numbers: strCat("axis ", 3, " of ", name).
template <class... Args> std::string strCat(const Args &...args) {
  std::string s;
  (detail::strAppend(s, args), ...);
  return s;
}

} // namespace qn::rt
