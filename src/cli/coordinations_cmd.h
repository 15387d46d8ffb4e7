// `lastcall coordinations list|show` and `lastcall dlq list|replay`: the operator's questions
// ("which deletions are stuck, on whom, since when; what happened to this one; what failed for
// good, and run it again") answered from the running service's API.
#pragma once

#include <optional>
#include <ostream>
#include <string>

namespace lastcall {

// Exit codes (documented in docs/operations.md).
inline constexpr int kExitFound = 0;
inline constexpr int kExitNotFound = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnavailable = 3;  // service unreachable, or the token was refused
inline constexpr int kExitConflict = 4;     // the service refused the change (409)

struct CliTarget {
  std::string url;    // --url or LASTCALL_URL, default http://127.0.0.1:8080
  std::string token;  // --token or LASTCALL_TOKEN
  bool json = false;  // --json: the API's JSON as it is, for scripts
};

struct ListOptions {
  std::optional<std::string> status, outcome, consumer;
  int limit = 50;
  bool all_pages = false;
  std::string cursor;  // start after this page (a nextCursor the service gave out)
};

// Prints the coordinations (a table, or JSON). Returns kExitFound when at least one matched,
// kExitNotFound when none did, kExitUsage for values the service refused (400),
// kExitUnavailable when it could not be asked.
int ListCoordinationsCommand(const CliTarget& target, const ListOptions& options, std::ostream& out,
                             std::ostream& err);

// Prints one coordination and its timeline as a table (or both as JSON).
int ShowCoordinationCommand(const CliTarget& target, const std::string& id, std::ostream& out,
                            std::ostream& err);

struct DlqListOptions {
  std::optional<std::string> target;
  bool include_replayed = true;
  int limit = 50;
};

// Prints the dead letters, newest first (a table, or JSON). kExitFound when there is at least
// one, kExitNotFound when none.
int ListDeadLettersCommand(const CliTarget& target, const DlqListOptions& options,
                           std::ostream& out, std::ostream& err);

// Replays one dead letter (POST /dlq/{id}/replay). kExitConflict when it was already replayed or
// its target failed again.
int ReplayDeadLetterCommand(const CliTarget& target, const std::string& id, std::ostream& out,
                            std::ostream& err);

}  // namespace lastcall
