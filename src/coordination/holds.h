// Legal holds in the store. An operator places a hold on a user, an account or a file; while an
// active (unreleased) hold covers a file, its coordination is "held" and never proceeds. Holds are
// never deleted: a release sets released_at, so the record of who held what, and why, stays.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/clock.h"
#include "store/sql.h"

namespace lastcall {

// stored: do not rename.
inline constexpr char kHoldScopeUser[] = "user";
inline constexpr char kHoldScopeAccount[] = "account";
inline constexpr char kHoldScopeFile[] = "file";

struct Hold {
  std::string id;
  std::string scope;      // kHoldScope*
  std::string target_id;  // the user, account or file id
  std::string reason;     // the operator's text (not user content)
  std::string placed_by;
  WallMillis placed_at = 0;
  std::optional<std::string> released_by;
  std::optional<WallMillis> released_at;
};

Status InsertHold(SqlTx& tx, const Hold& h);
Result<std::optional<Hold>> FindHold(SqlTx& tx, const std::string& id);
// Sets released_at/by when the hold is still active. Returns true when this call released it.
Result<bool> MarkHoldReleased(SqlTx& tx, const std::string& id, const std::string& by, WallMillis at);
// Every hold, newest first; only the active ones when active_only.
Result<std::vector<Hold>> ListHolds(SqlTx& tx, bool active_only);
// The oldest active hold covering a file of this user and account, or nullopt.
Result<std::optional<Hold>> ActiveHoldCovering(SqlTx& tx, const std::string& user_id,
                                               const std::string& account_id,
                                               const std::string& file_id);
// Ids of the coordinations with status `status` whose file the hold's scope covers.
Result<std::vector<std::string>> CoordinationsUnderHold(SqlTx& tx, const Hold& h,
                                                        const std::string& status);

}  // namespace lastcall
