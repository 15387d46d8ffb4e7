// The records lastcall keeps for a user: accounts, uploaded files and their transactions. Plain
// values; storage lives in store/repos.h and JSON in http/.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/clock.h"
#include "domain/money.h"

namespace lastcall {

// File status strings are stored: do not rename.
inline constexpr char kFileActive[] = "active";
inline constexpr char kFileDeletionRequested[] = "deletion_requested";

struct Account {
  std::string id;
  std::string user_id;
  std::string name;
  std::string currency;
  Money balance;                 // derived: sum of the account's transactions
  int64_t transaction_count = 0; // derived
  std::optional<std::string> last_transaction_date;  // derived: max date, YYYY-MM-DD
  WallMillis created_at = 0;
};

struct FileRecord {
  std::string id;
  std::string user_id;
  std::string account_id;
  std::string name;
  std::string content_type;
  int64_t size_bytes = 0;
  std::string sha256;
  std::string blob_key;  // server-made; never derived from user input
  int64_t transaction_count = 0;
  std::string status;    // kFileActive or kFileDeletionRequested
  std::optional<std::string> coordination_id;
  WallMillis uploaded_at = 0;
};

struct Transaction {
  std::string id;
  std::string user_id;
  std::string account_id;
  std::string file_id;
  int64_t row_no = 0;
  std::string date;
  std::string description;
  Money amount;
  std::string currency;
  std::optional<std::string> merchant;
  std::optional<std::string> category;
  std::optional<std::string> category_source;  // import, learned, rule, user (stored)
};

}  // namespace lastcall
