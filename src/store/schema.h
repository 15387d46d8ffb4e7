// Versioned schema migrations, run at start inside one write unit each. A migration is applied at
// most once (schema_migrations records it); a database newer than this binary is refused.
#pragma once

#include <string>
#include <string_view>

#include "store/sql.h"

namespace lastcall {

// Applies every migration not yet applied. Errors: kUnavailable when the store fails,
// kConflict "schema_too_new" when the database holds migrations this binary does not know.
Status Migrate(Database& db);

// A migration statement as the engine needs it: unchanged on SQLite; on PostgreSQL INTEGER columns
// become BIGINT (SQLite's INTEGER is 64-bit) and "INTEGER PRIMARY KEY AUTOINCREMENT" an identity
// column. The only place the two engines' DDL differs: write new migrations in portable DDL.
std::string DdlFor(SqlDialect dialect, std::string_view ddl);

// The highest migration version this binary knows.
int LatestSchemaVersion();

}  // namespace lastcall
