//===- GradRules.cpp - The gradient-rule registry -------------------------===//
#include "GradRules.h"

#include <algorithm>
#include <cassert>

namespace qn::grad {

void GradRuleRegistry::add(llvm::StringRef op, GradRule rule, llvm::StringRef family) {
  bool inserted = rules_.try_emplace(op, Entry{rule, family.str()}).second;
  assert(inserted && "two gradient rules for one op");
  (void)inserted;
}

const GradRuleRegistry::Entry *GradRuleRegistry::lookup(llvm::StringRef op) const {
  auto it = rules_.find(op);
  return it == rules_.end() ? nullptr : &it->second;
}

std::vector<std::string> GradRuleRegistry::ops() const {
  std::vector<std::string> out;
  for (const auto &e : rules_)
    out.push_back(e.getKey().str());
  std::sort(out.begin(), out.end());
  return out;
}

const GradRuleRegistry &gradRules() {
  // One register<Family>GradRules(r) call per file under grad/ as they land.
  static const GradRuleRegistry registry;
  return registry;
}

} // namespace qn::grad
