// lastcall: the command line. Only wiring; everything else lives in lastcall_core.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>

#include "app/app.h"
#include "app/config.h"
#include "cli/coordinations_cmd.h"
#include "cli/receipt_cmd.h"
#include "common/clock.h"
#include "http/jwt.h"

namespace {

// "90", "90s", "30m", "1h", "7d" -> seconds; -1 when malformed or not positive.
int64_t ParseTtl(const std::string& s) {
  if (s.empty()) return -1;
  int64_t mult = 1;
  std::string digits = s;
  switch (s.back()) {
    case 's': mult = 1; digits.pop_back(); break;
    case 'm': mult = 60; digits.pop_back(); break;
    case 'h': mult = 3600; digits.pop_back(); break;
    case 'd': mult = 86400; digits.pop_back(); break;
    default: break;
  }
  if (digits.empty() || digits.size() > 9 ||
      digits.find_first_not_of("0123456789") != std::string::npos) {
    return -1;
  }
  int64_t v = std::stoll(digits) * mult;
  return v > 0 ? v : -1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"lastcall: coordinated, durable deletion of uploaded bank statements"};
  app.require_subcommand(1);

  auto* serve = app.add_subcommand(
      "serve",
      "Start the service. Configured by environment: LASTCALL_DATA_DIR (var), LASTCALL_LISTEN "
      "(127.0.0.1:8080), LASTCALL_JWT_SECRET, LASTCALL_MAX_UPLOAD_BYTES, LASTCALL_MAX_IMPORT_ROWS, "
      "ENABLE_EVENT_PUBLISHING, COORDINATION_TIMEOUT_MINUTES, EXPECTED_CONSUMERS, "
      "LASTCALL_SQLITE_SYNCHRONOUS, LASTCALL_HTTP_THREADS, LASTCALL_HTTP_READ_TIMEOUT_SECONDS, "
      "LASTCALL_HTTP_MAX_CONNECTIONS, LASTCALL_LOG_LEVEL, LASTCALL_METRICS_LISTEN (/metrics on its own "
      "host:port), DELETION_GRACE_MINUTES, LASTCALL_RECEIPT_KEY_FILE, OPTIONAL_GRACE_SECONDS, "
      "LASTCALL_WEBHOOK_MAX_ATTEMPTS, LASTCALL_WEBHOOK_BACKOFF_BASE_MS, "
      "LASTCALL_WEBHOOK_BACKOFF_CAP_MS, LASTCALL_WEBHOOK_TIMEOUT_MS, LASTCALL_WEBHOOK_WORKERS, "
      "LASTCALL_DATABASE_URL, LASTCALL_DATABASE_WRITERS, LASTCALL_NATS_URL, LASTCALL_BLOB_URL, "
      "LASTCALL_TEST_DELETION_DELAY_MS "
      "and LASTCALL_TEST_CONSUMER_FAULTS (fault injection for tests) -- see "
      "docs/operations.md");

  auto* token = app.add_subcommand(
      "token", "Print a JWT for a user, signed with LASTCALL_JWT_SECRET or the data folder's secret");
  std::string user;
  std::string ttl = "1h";
  std::string role;
  token->add_option("--user", user, "the user id (the token's sub)")->required();
  token->add_option("--ttl", ttl, "lifetime: 90s, 30m, 1h, 7d")->capture_default_str();
  token->add_option("--role", role, "optional role claim, e.g. operator");

  auto* coordinations = app.add_subcommand(
      "coordinations", "Inspect coordinations through the running service's API (exit codes: 0 "
                       "found, 1 not found, 2 usage, 3 service unreachable or token refused)");
  coordinations->require_subcommand(1);
  coordinations->fallthrough();  // --url, --token and --json may follow list/show
  auto* dlq = app.add_subcommand(
      "dlq", "The dead letter queue through the running service's API (operator token; exit "
             "codes: 0 found, 1 not found, 2 usage, 3 unreachable or refused, 4 conflict)");
  dlq->require_subcommand(1);
  dlq->fallthrough();
  lastcall::CliTarget target;
  target.url = lastcall::ProcessEnv("LASTCALL_URL").value_or("http://127.0.0.1:8080");
  target.token = lastcall::ProcessEnv("LASTCALL_TOKEN").value_or("");
  for (auto* sub : {coordinations, dlq}) {
    sub->add_option("--url", target.url, "the service, http://host:port (env LASTCALL_URL)");
    sub->add_option("--token", target.token, "a JWT; an operator token sees every user's (env LASTCALL_TOKEN)");
    sub->add_flag("--json", target.json, "print the API's JSON, for scripts");
  }
  lastcall::ListOptions list_options;
  std::string status, outcome, consumer;
  auto* list = coordinations->add_subcommand("list", "List coordinations, newest first");
  list->add_option("--status", status, "waiting, held, deleting, completed, cancelled or vetoed");
  list->add_option("--outcome", outcome, "all_completed or timed_out");
  list->add_option("--consumer", consumer,
                   "only those that expect this consumer and have no completion from it (with "
                   "--status waiting: the deletions still waiting on it)");
  list->add_option("--limit", list_options.limit, "per page, 1 to 500")->check(CLI::Range(1, 500));
  list->add_flag("--all", list_options.all_pages, "follow every page");
  list->add_option("--cursor", list_options.cursor, "continue after a page (its nextCursor)");
  std::string show_id;
  auto* show = coordinations->add_subcommand("show", "Show one coordination and its timeline");
  show->add_option("id", show_id, "the coordination id")->required();

  lastcall::DlqListOptions dlq_options;
  std::string dlq_target, replay_id;
  bool dlq_pending = false;
  auto* dlq_list = dlq->add_subcommand("list", "List dead letters, newest first");
  dlq_list->add_option("--target", dlq_target, "only this consumer's");
  dlq_list->add_flag("--pending", dlq_pending, "only those not replayed yet");
  dlq_list->add_option("--limit", dlq_options.limit, "1 to 500")->check(CLI::Range(1, 500));
  auto* dlq_replay = dlq->add_subcommand("replay", "Deliver a dead letter's event again");
  dlq_replay->add_option("id", replay_id, "the dead letter id")->required();
  auto* receipt = app.add_subcommand("receipt", "Deletion receipts: verify one offline, rotate the key");
  receipt->require_subcommand(1);
  lastcall::VerifyOptions verify_options;
  auto* verify = receipt->add_subcommand(
      "verify",
      "Check a receipt (the JWS, or the JSON of GET /coordinations/{id}/receipt) offline. Exit "
      "codes: 0 valid (claims printed), 1 not valid, 2 usage");
  verify->add_option("file", verify_options.receipt_file, "the receipt file")->required();
  verify->add_option("--jwks", verify_options.jwks_file, "a saved /.well-known/jwks.json");
  verify->add_option("--key", verify_options.key_file,
                     "a PEM key (public or private) instead of --jwks");
  auto* rotate = receipt->add_subcommand(
      "rotate-key",
      "Retire the data folder's receipt signing key (its public key stays in the JWKS) and create a "
      "new one; restart the service to sign with it");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  if (*coordinations) {
    if (!status.empty()) list_options.status = status;
    if (!outcome.empty()) list_options.outcome = outcome;
    if (!consumer.empty()) list_options.consumer = consumer;
    if (*list) return lastcall::ListCoordinationsCommand(target, list_options, std::cout, std::cerr);
    return lastcall::ShowCoordinationCommand(target, show_id, std::cout, std::cerr);
  }

  if (*dlq) {
    if (*dlq_list) {
      if (!dlq_target.empty()) dlq_options.target = dlq_target;
      dlq_options.include_replayed = !dlq_pending;
      return lastcall::ListDeadLettersCommand(target, dlq_options, std::cout, std::cerr);
    }
    return lastcall::ReplayDeadLetterCommand(target, replay_id, std::cout, std::cerr);
  }

  auto config = lastcall::LoadConfig(lastcall::ProcessEnv);
  if (!config.ok()) {
    std::fprintf(stderr, "lastcall: %s\n", config.status().message().c_str());
    return 2;
  }
  if (*receipt) {
    if (*rotate) return lastcall::RotateReceiptKeyCommand(config->receipt_key_dir(), std::cout, std::cerr);
    verify_options.key_dir = config->receipt_key_dir();
    if (!verify_options.jwks_file.empty() && !verify_options.key_file.empty()) {
      std::fprintf(stderr, "lastcall receipt verify: give --jwks or --key, not both\n");
      return 2;
    }
    return lastcall::VerifyReceiptCommand(verify_options, std::cout, std::cerr);
  }
  if (*serve) return lastcall::RunServe(*config);

  int64_t ttl_seconds = ParseTtl(ttl);
  if (ttl_seconds < 0) {
    std::fprintf(stderr, "lastcall token: --ttl must look like 90s, 30m, 1h or 7d\n");
    return 2;
  }
  if (user.empty() || user.size() > 128) {
    std::fprintf(stderr, "lastcall token: --user must be 1 to 128 characters\n");
    return 2;
  }
  bool created = false;
  auto secret = lastcall::ResolveJwtSecret(*config, &created);
  if (!secret.ok()) {
    std::fprintf(stderr, "lastcall token: %s\n", secret.status().message().c_str());
    return 1;
  }
  std::cout << lastcall::SignJwt(user, role, ttl_seconds, *secret, lastcall::SystemClock().Now())
            << "\n";
  return 0;
}
