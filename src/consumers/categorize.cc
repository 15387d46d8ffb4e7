#include "consumers/categorize.h"

#include <algorithm>
#include <array>
#include <utility>

namespace lastcall {
namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

struct KeywordRule {
  const char* category;
  std::array<const char*, 5> keywords;  // unused slots are nullptr
};

// Documented in docs/api.md ("Categorization"). Order matters: the first match wins.
constexpr KeywordRule kRules[] = {
    {"groceries", {"grocery", "supermarket", "whole foods", "trader joe"}},
    {"transport", {"uber", "lyft", "taxi", "shell", "fuel"}},
    {"dining", {"restaurant", "cafe", "coffee", "starbucks"}},
    {"housing", {"rent", "mortgage", nullptr, nullptr}},
    {"income", {"salary", "payroll", nullptr, nullptr}},
    {"subscriptions", {"netflix", "spotify", nullptr, nullptr}},
};

}  // namespace

std::string MerchantKey(const Transaction& t) {
  std::string_view src = t.merchant && !Trim(*t.merchant).empty() ? *t.merchant : t.description;
  return Lower(Trim(src));
}

std::optional<std::string> KeywordCategory(std::string_view merchant, std::string_view description) {
  std::string m = Lower(merchant);
  std::string d = Lower(description);
  for (const auto& rule : kRules) {
    for (const char* k : rule.keywords) {
      if (k && (m.find(k) != std::string::npos || d.find(k) != std::string::npos)) {
        return std::string(rule.category);
      }
    }
  }
  return std::nullopt;
}

std::optional<std::string> NormalizeCategory(std::string_view raw) {
  std::string c = Lower(Trim(raw));
  if (c.empty() || c.size() > 64) return std::nullopt;
  for (char ch : c) {
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == ' ' ||
              ch == '-';
    if (!ok) return std::nullopt;
  }
  return c;
}

Result<CategoryChoice> ChooseCategory(SqlTx& tx, const Transaction& t, LearnedCache* cache) {
  if (t.category && !t.category->empty()) return CategoryChoice{*t.category, "import"};
  std::string key = MerchantKey(t);
  if (!key.empty()) {
    std::optional<std::string> learned;
    auto hit = cache ? cache->find({t.user_id, key}) : LearnedCache::iterator();
    if (cache && hit != cache->end()) {
      learned = hit->second;
    } else {
      auto m = tx.QueryOne(
          "SELECT category FROM merchant_mappings WHERE user_id = ? AND merchant = ?",
          {t.user_id, key});
      if (!m.ok()) return m.status();
      if (*m) learned = (*m)->Text(0);
      if (cache) cache->emplace(std::make_pair(t.user_id, key), learned);
    }
    if (learned) return CategoryChoice{*learned, "learned"};
  }
  if (auto k = KeywordCategory(t.merchant.value_or(""), t.description)) {
    return CategoryChoice{*k, "rule"};
  }
  return CategoryChoice{kUncategorized, "default"};
}

}  // namespace lastcall
