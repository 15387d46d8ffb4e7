// A table's columns declared once, each bound to a field of a struct: the SELECT list, the reader
// of a row, the INSERT placeholders and the INSERT values all come from the one declaration, so
// that a column added, removed or moved cannot leave one of them reading or writing the wrong
// position.
//
//   const RowMapping<Hold>& Holds() {
//     static const RowMapping<Hold> m({{"id", &Hold::id}, {"placed_at", &Hold::placed_at}, ...});
//     return m;
//   }
//   Holds().One(tx, "SELECT " + Holds().columns() + " FROM holds WHERE id = ?", {id});
//
// A field is a std::string, std::optional<std::string>, int64_t, std::optional<int64_t>, bool
// (stored as 0/1) or Money (stored as its units); any other type names a pair of converters
// (RowField::Custom). SQL NULL reads as SqlRow does: 0, "" or nullopt. A mapping is immutable after
// construction and safe to share between threads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

#include "common/status.h"
#include "domain/money.h"
#include "store/sql.h"

namespace lastcall {

template <typename T>
class RowMapping {
 public:
  // Converters for a field of another type (an enum, a parsed value). Plain function pointers: a
  // mapping holds no state.
  struct Custom {
    void (*read)(T& out, const SqlRow& row, size_t column);
    SqlValue (*write)(const T& in);
  };
  using Field = std::variant<std::string T::*, std::optional<std::string> T::*, int64_t T::*,
                             std::optional<int64_t> T::*, bool T::*, Money T::*, Custom>;
  struct Column {
    const char* name;
    Field field;
  };

  explicit RowMapping(std::vector<Column> columns) : columns_(std::move(columns)) {
    for (size_t i = 0; i < columns_.size(); ++i) {
      list_ += i ? ", " : "";
      list_ += columns_[i].name;
      placeholders_ += i ? ", ?" : "?";
    }
  }

  // "a, b, c": the columns in declaration order, for a SELECT or an INSERT's column list.
  const std::string& columns() const { return list_; }
  // "?, ?, ?": one placeholder per column, for an INSERT's VALUES.
  const std::string& placeholders() const { return placeholders_; }
  size_t size() const { return columns_.size(); }

  // Reads the row's columns first .. first + size() - 1 (a query selecting columns()).
  T Read(const SqlRow& row, size_t first = 0) const {
    T out{};
    for (size_t i = 0; i < columns_.size(); ++i) {
      size_t c = first + i;
      std::visit(
          [&](auto&& f) {
            using F = std::decay_t<decltype(f)>;
            if constexpr (std::is_same_v<F, std::string T::*>) {
              out.*f = row.Text(c);
            } else if constexpr (std::is_same_v<F, std::optional<std::string> T::*>) {
              out.*f = row.OptText(c);
            } else if constexpr (std::is_same_v<F, int64_t T::*>) {
              out.*f = row.Int(c);
            } else if constexpr (std::is_same_v<F, std::optional<int64_t> T::*>) {
              out.*f = row.OptInt(c);
            } else if constexpr (std::is_same_v<F, bool T::*>) {
              out.*f = row.Int(c) != 0;
            } else if constexpr (std::is_same_v<F, Money T::*>) {
              out.*f = Money::FromUnits(row.Int(c));
            } else {
              f.read(out, row, c);
            }
          },
          columns_[i].field);
    }
    return out;
  }

  // Appends the value of every column, in declaration order, to params.
  void AppendValues(const T& in, SqlParams& params) const {
    for (const Column& col : columns_) {
      params.push_back(std::visit(
          [&](auto&& f) -> SqlValue {
            using F = std::decay_t<decltype(f)>;
            if constexpr (std::is_same_v<F, std::string T::*> || std::is_same_v<F, int64_t T::*>) {
              return SqlValue(in.*f);
            } else if constexpr (std::is_same_v<F, std::optional<std::string> T::*> ||
                                 std::is_same_v<F, std::optional<int64_t> T::*>) {
              return (in.*f) ? SqlValue(*(in.*f)) : SqlValue(SqlNull{});
            } else if constexpr (std::is_same_v<F, bool T::*>) {
              return SqlValue(static_cast<int64_t>((in.*f) ? 1 : 0));
            } else if constexpr (std::is_same_v<F, Money T::*>) {
              return SqlValue((in.*f).units());
            } else {
              return f.write(in);
            }
          },
          col.field));
    }
  }
  SqlParams Values(const T& in) const {
    SqlParams params;
    params.reserve(columns_.size());
    AppendValues(in, params);
    return params;
  }

  // Every row of a query selecting columns(), in order.
  Result<std::vector<T>> All(SqlTx& tx, std::string_view sql, const SqlParams& params) const {
    std::vector<T> out;
    Status st = tx.Query(sql, params, [&](const SqlRow& r) {
      out.push_back(Read(r));
      return true;
    });
    if (!st.ok()) return st;
    return out;
  }
  // The first row of a query selecting columns(), or nullopt when there is none.
  Result<std::optional<T>> One(SqlTx& tx, std::string_view sql, const SqlParams& params) const {
    auto row = tx.QueryOne(sql, params);
    if (!row.ok()) return row.status();
    if (!*row) return std::optional<T>();
    return std::optional<T>(Read(**row));
  }

 private:
  std::vector<Column> columns_;
  std::string list_;
  std::string placeholders_;
};

}  // namespace lastcall
