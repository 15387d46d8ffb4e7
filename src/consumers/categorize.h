// How a transaction gets its category: the user's learned merchant mappings first, then the
// documented keyword rules, else "uncategorized". Pure functions plus one lookup.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "domain/model.h"
#include "store/sql.h"

namespace lastcall {

inline constexpr char kUncategorized[] = "uncategorized";

// The key a merchant mapping is stored under: the merchant (else the description), trimmed and
// lower-cased (ASCII). Empty when both are empty.
std::string MerchantKey(const Transaction& t);

// The keyword rules (docs/api.md lists them): the first rule whose keyword occurs,
// case-insensitively, in the merchant or description; nullopt when none does.
std::optional<std::string> KeywordCategory(std::string_view merchant, std::string_view description);

// A valid category: 1..64 characters of [a-z0-9_ -] after ASCII lower-casing; nullopt otherwise.
std::optional<std::string> NormalizeCategory(std::string_view raw);

struct CategoryChoice {
  std::string category;
  std::string source;  // "import", "learned", "rule", "default" (stored)
};

// Learned mappings already looked up in this unit of work, (user, merchant key) -> category or
// nullopt: a file's rows repeat a few merchants, and each lookup is a round trip on PostgreSQL.
using LearnedCache = std::map<std::pair<std::string, std::string>, std::optional<std::string>>;

// The category a transaction gets now: its imported one if it has one, else a learned mapping of
// the user, else a keyword rule, else uncategorized. cache (may be null) remembers lookups; use
// one only within one transaction.
Result<CategoryChoice> ChooseCategory(SqlTx& tx, const Transaction& t, LearnedCache* cache = nullptr);

}  // namespace lastcall
