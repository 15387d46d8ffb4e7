// Versioned schema migrations, run at start inside one write unit each. A migration is applied at
// most once (schema_migrations records it); a database newer than this binary is refused.
#pragma once

#include "store/sql.h"

namespace lastcall {

// Applies every migration not yet applied. Errors: kUnavailable when the store fails,
// kConflict "schema_too_new" when the database holds migrations this binary does not know.
Status Migrate(Database& db);

// The highest migration version this binary knows.
int LatestSchemaVersion();

}  // namespace lastcall
