#include "store/sql.h"

#include <future>

namespace lastcall {

int64_t SqlRow::Int(size_t i) const {
  const SqlValue& v = values_.at(i);
  if (auto p = std::get_if<int64_t>(&v)) return *p;
  if (auto s = std::get_if<std::string>(&v)) return std::strtoll(s->c_str(), nullptr, 10);
  return 0;
}

std::string SqlRow::Text(size_t i) const {
  const SqlValue& v = values_.at(i);
  if (auto s = std::get_if<std::string>(&v)) return *s;
  if (auto p = std::get_if<int64_t>(&v)) return std::to_string(*p);
  return "";
}

std::optional<int64_t> SqlRow::OptInt(size_t i) const {
  if (IsNull(i)) return std::nullopt;
  return Int(i);
}

std::optional<std::string> SqlRow::OptText(size_t i) const {
  if (IsNull(i)) return std::nullopt;
  return Text(i);
}

Status SqlTx::Send(std::string_view sql, const SqlParams& params) {
  auto r = Exec(sql, params);
  return r.ok() ? Status::Ok() : r.status();
}

Result<std::vector<SqlRow>> SqlTx::QueryAll(std::string_view sql, const SqlParams& params) {
  std::vector<SqlRow> rows;
  Status st = Query(sql, params, [&](const SqlRow& r) {
    rows.push_back(r);
    return true;
  });
  if (!st.ok()) return st;
  return rows;
}

Result<std::optional<SqlRow>> SqlTx::QueryOne(std::string_view sql, const SqlParams& params) {
  std::optional<SqlRow> row;
  Status st = Query(sql, params, [&](const SqlRow& r) {
    row = r;
    return false;
  });
  if (!st.ok()) return st;
  return row;
}

std::string_view LockRowsClause(const SqlTx& tx) {
  return tx.dialect() == SqlDialect::kPostgres ? " FOR UPDATE" : "";
}

std::string_view SkipLockedRowsClause(const SqlTx& tx) {
  return tx.dialect() == SqlDialect::kPostgres ? " FOR UPDATE SKIP LOCKED" : "";
}

namespace {
// Queues fn with write (Write or WriteInSession) and waits for its done.
template <typename WriteMethod>
Status WriteAndWait(WriteMethod write, WriteFn fn) {
  std::promise<Status> p;
  auto f = p.get_future();
  write(std::move(fn), [&p](Status st) { p.set_value(std::move(st)); });
  return f.get();
}
}  // namespace

Status Database::WriteSync(WriteFn fn) {
  return WriteAndWait([this](WriteFn f, WriteDone d) { Write(std::move(f), std::move(d)); },
                      std::move(fn));
}

Status Database::WriteSyncInSession(WriteFn fn) {
  return WriteAndWait(
      [this](WriteFn f, WriteDone d) { WriteInSession(std::move(f), std::move(d)); },
      std::move(fn));
}

std::string PaddedInList(SqlParams& values) {
  size_t n = 1;
  while (n < values.size()) n *= 2;
  if (!values.empty()) values.resize(n, values.back());
  std::string out = "(";
  for (size_t i = 0; i < n; ++i) out += i == 0 ? "?" : ", ?";
  return out + ")";
}

std::string ValuesRows(size_t columns, size_t rows) {
  std::string row = "(";
  for (size_t c = 0; c < columns; ++c) row += c == 0 ? "?" : ", ?";
  row += ")";
  std::string out;
  out.reserve(rows * (row.size() + 2));
  for (size_t r = 0; r < rows; ++r) {
    if (r > 0) out += ", ";
    out += row;
  }
  return out;
}

}  // namespace lastcall
