// Verified deletion: after a file's deletion, look everywhere lastcall keeps data for anything of
// the file that is left. Allowed to remain: the tombstone, the coordination and its timeline, and
// the consumers' archived summaries (analytics_archive: per month and category, no
// transaction-level data). Everything else holding the file's id or content is residue.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "blobs/blob_store.h"
#include "store/sql.h"

namespace lastcall {

// stored: do not rename.
inline constexpr char kVerified[] = "verified";
inline constexpr char kResidue[] = "residue";

// The residue of file_id: a JSON object with one member per place something was found, e.g.
// {"transactions": 3, "content": true}; {} when nothing was. Places checked: the transactions
// table, the files row, the analytics consumer's per-file totals (analytics_file_totals), and the
// content under blob_key in blobs (skipped when blob_key is nullopt: a deletion from before
// verification existed). A store or blob error is returned as an error, never as "verified".
Result<nlohmann::json> FindResidue(SqlTx& tx, BlobStore& blobs, const std::string& file_id,
                                   const std::optional<std::string>& blob_key);

}  // namespace lastcall
