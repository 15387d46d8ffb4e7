#include "consumers/categorization_consumer.h"

#include <map>
#include <vector>

#include "consumers/categorize.h"
#include "store/repos.h"

namespace lastcall {

Status CategorizationConsumer::Handle(const CloudEvent& event, SqlTx& tx) {
  if (event.type == kFileUploaded) return OnUploaded(event, tx);
  if (event.type == kFileDeleteRequested) {
    return CompleteAfter(tx, outbox_, clock_, ids_, kCategorizationConsumer, event,
                         [&] { return Learn(event, tx); },
                         faults_.For(kCategorizationConsumer,
                                     event.data.value("fileId", std::string())));
  }
  return Status::Ok();
}

Status CategorizationConsumer::OnUploaded(const CloudEvent& event, SqlTx& tx) {
  auto rows = ListFileTransactions(tx, event.data.value("fileId", std::string()));
  if (!rows.ok()) return rows.status();
  // One UPDATE per (category, source) for all the rows that get it, not one per row.
  LearnedCache cache;
  std::map<std::pair<std::string, std::string>, std::vector<std::string>> chosen;
  for (const Transaction& t : *rows) {
    if (t.category) continue;  // imported or already chosen: never overwrite
    auto choice = ChooseCategory(tx, t, &cache);
    if (!choice.ok()) return choice.status();
    chosen[{choice->category, choice->source}].push_back(t.id);
  }
  for (const auto& [choice, ids] : chosen) {
    LASTCALL_RETURN_IF_ERROR(SetCategories(tx, ids, choice.first, choice.second));
  }
  return Status::Ok();
}

WorkResult CategorizationConsumer::Learn(const CloudEvent& event, SqlTx& tx) {
  // Only the categories a user chose teach a mapping: the store filters the file's rows (the
  // others, usually all of them, are never read into memory), in row order as before.
  std::vector<Transaction> chosen;  // user_id, description, merchant, category: what is read below
  LASTCALL_RETURN_IF_ERROR(tx.Query(
      "SELECT user_id, description, merchant, category FROM transactions WHERE file_id = ? AND "
      "category_source = 'user' AND category IS NOT NULL ORDER BY row_no",
      {event.data.value("fileId", std::string())}, [&](const SqlRow& r) {
        Transaction t;
        t.user_id = r.Text(0);
        t.description = r.Text(1);
        t.merchant = r.OptText(2);
        t.category = r.OptText(3);
        chosen.push_back(std::move(t));
        return true;
      }));
  int64_t learned = 0;
  WallMillis now = clock_.Now();
  for (const Transaction& t : chosen) {
    std::string key = MerchantKey(t);
    if (key.empty()) continue;
    auto r = tx.Exec(
        "INSERT INTO merchant_mappings (user_id, merchant, category, learned_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (user_id, merchant) DO UPDATE SET category = excluded.category, "
        "learned_at = excluded.learned_at",
        {t.user_id, key, *t.category, now});
    if (!r.ok()) return r.status();
    ++learned;
  }
  return nlohmann::json{{"mappingsLearned", learned}};
}

}  // namespace lastcall
