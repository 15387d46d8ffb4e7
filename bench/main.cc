// lastcall_bench: the end-to-end benchmark behind `make bench` (issue 7).
//
// For each SQLite synchronous mode it starts a real `lastcall serve`, seeds users and files over
// HTTP, measures GET /files/{id}, coordinated deletion at full load (closed loop) and at half that
// rate (open loop), then the raw limit: the same coordination-shaped rows written straight to
// SQLite in batches. Then the deadline sweep with 1,000,000 and with 1,000 coordinations waiting.
// Results go to JSON, an SVG chart and docs/performance.md. See docs/performance.md for the method.
#include <CLI/CLI.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <thread>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.h"
#include "common/clock.h"
#include "common/ids.h"
#include "common/log.h"
#include "http/jwt.h"
#include "http_load.h"
#include "report.h"
#include "server_process.h"
#include "store_bench.h"
#include "store/postgres/postgres_database.h"
#include "store/sqlite/page_cache.h"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace bench {
namespace {

// Bus targets in the server (app.cc's rules: file_deletion_consumer, analytics_consumer,
// categorization_consumer). Each keeps a cursor in delivery_cursors.
constexpr int kBusTargets = 3;

struct Options {
  std::string lastcall = "build/lastcall";
  int users = 100;
  int files = 20000;
  int transactions = 10;
  DateShape dates = DateShape::kStatement;
  int connections = 64;
  int client_threads = 1;
  int http_threads = 0;  // 0: the server's default
  std::vector<std::string> modes = {"NORMAL", "FULL"};
  double get_seconds = 5;
  int raw_batch = 100;
  int raw_cache_mib = 64;  // the server's writer cache since the "indexes for the hot paths" change
  int64_t sweep_waiting = 1000000;
  int sweep_due = 1000;
  std::string sweep_mode = "FULL";
  double sweep_lead_s = 3;
  bool skip_sweep = false, skip_raw = false, skip_get = false, skip_half = false;
  std::string log_level = "info";
  std::string work_dir;
  bool keep_work = false;
  std::string out_md = "docs/performance.md";
  std::string out_json = "bench/results/latest.json";
  std::string out_svg = "docs/performance-chart.svg";
  std::string profile_notes = "bench/profile.md";
  std::string perf_dir;  // when set: `perf record` the server during each full load
  bool raw_only = false;
  std::string render_only;  // a results JSON to turn into the report files, running nothing
  std::string attach;    // when set: a shell command run during each full load ({pid}, {mode})
  std::string database_url;  // when set: the server runs on this PostgreSQL database (emptied
                             // first); the raw limit and the sweep stay SQLite's
  std::string nats_url;  // when set: the server's event bus is NATS JetStream at this URL (the
                         // server never sees the bench's own LASTCALL_* variables)
  // KEY=VALUE settings passed to every server the bench starts (e.g. LASTCALL_SQLITE_MEMORY_MIB=0),
  // since the server does not inherit the bench's environment. Checked by ServerEnv.
  std::vector<std::string> server_env;
  std::map<std::string, std::string> server_vars;  // server_env parsed (main)
};

// The --server-env settings as a map; an error names the first that is not KEY=VALUE or that
// sets what the bench itself controls (the data folder, the secret, the address, the mode).
lastcall::Result<std::map<std::string, std::string>> ServerEnv(const Options& o) {
  std::map<std::string, std::string> out;
  for (const std::string& kv : o.server_env) {
    size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      return lastcall::Status::Invalid("invalid_server_env", "--server-env " + kv + ": expected KEY=VALUE");
    }
    std::string key = kv.substr(0, eq);
    for (const char* owned : {"LASTCALL_DATA_DIR", "LASTCALL_JWT_SECRET", "LASTCALL_LISTEN",
                              "LASTCALL_SQLITE_SYNCHRONOUS", "LASTCALL_DATABASE_URL",
                              "LASTCALL_NATS_URL"}) {
      if (key == owned) {
        return lastcall::Status::Invalid(
            "invalid_server_env", "--server-env " + key + ": set by the bench itself (see --help)");
      }
    }
    out[key] = kv.substr(eq + 1);
  }
  return out;
}

std::string Substitute(std::string s, const std::string& key, const std::string& value) {
  for (size_t at = s.find(key); at != std::string::npos; at = s.find(key, at + value.size())) {
    s.replace(at, key.size(), value);
  }
  return s;
}

// Runs `exec <command>` through /bin/sh; returns its pid (or -1).
pid_t StartAttached(const std::string& command) {
  pid_t pid = ::fork();
  if (pid == 0) {
    std::string c = "exec " + command;
    execl("/bin/sh", "sh", "-c", c.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

// The label of the server's k-th thread (in start order) whose name (/proc/.../comm) is comm.
// The server names its own threads (src/store/sqlite, src/store/postgres, src/bus, src/bus/nats,
// src/coordination); the first is the main thread, which runs HTTP I/O; the other unnamed ones are
// HTTP I/O (and webhook) threads.
std::string ThreadLabel(size_t k, const std::string& comm) {
  if (comm == "sqlite-writer") return "SQLite writer";
  if (comm == "sqlite-ckpt") return "SQLite checkpointer";
  if (comm == "pg-writer") return "PostgreSQL writer";
  if (comm == "sqlite-finish") return "SQLite writer's finisher";
  if (comm == "pg-finish") return "PostgreSQL writer's finisher";
  if (comm == "bus-dispatch") return "bus dispatcher";
  if (comm == "coord-driver") return "coordination driver";
  if (comm == "nats-relay") return "NATS relay";
  if (comm.rfind("nats:", 0) == 0) return "NATS delivery to " + comm.substr(5);  // target, cut
  return k == 0 ? "main (HTTP I/O)" : "HTTP I/O";
}

// Starts `perf record <args>` on a process; returns its pid (or -1).
std::string g_perf_args = "-e cpu-clock -F 1999";
pid_t StartPerf(pid_t target, const std::string& out) {
  pid_t pid = ::fork();
  if (pid == 0) {
    std::string c = "exec perf record -q " + g_perf_args + " -p " + std::to_string(target) + " -o '" + out + "'";
    execl("/bin/sh", "sh", "-c", c.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

void StopPerf(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGINT);
  int status = 0;
  ::waitpid(pid, &status, 0);
}

// The environment of a server the bench starts: its data folder, JWT secret and synchronous
// mode, the log level and HTTP threads chosen on the command line, then --server-env.
std::map<std::string, std::string> ServerEnvFor(const Options& o, const fs::path& data_dir,
                                                const std::string& secret, const std::string& mode) {
  std::map<std::string, std::string> env = {
      {"LASTCALL_DATA_DIR", data_dir.string()},
      {"LASTCALL_JWT_SECRET", secret},
      {"LASTCALL_SQLITE_SYNCHRONOUS", mode},
      {"LASTCALL_LOG_LEVEL", o.log_level},
  };
  if (o.http_threads > 0) env["LASTCALL_HTTP_THREADS"] = std::to_string(o.http_threads);
  for (const auto& [k, v] : o.server_vars) env[k] = v;
  return env;
}

std::string Bearer(const std::string& secret, const std::string& user) {
  return "Bearer " + lastcall::SignJwt(user, "", 7 * 86400, secret, WallMillis());
}

std::string Csv(DateShape dates, int file_index, int users, int rows) {
  static const char* kDesc[] = {"Whole Foods Market", "Uber trip",      "Rent March",
                                "Starbucks coffee",   "ACME payroll",   "Netflix",
                                "Hardware store",     "Shell fuel",     "Book shop",
                                "Pharmacy"};
  std::string out = "date,description,amount,currency,merchant\n";
  for (int t = 0; t < rows; ++t) {
    char line[160];
    int k = (file_index + t) % 10;
    std::snprintf(line, sizeof line, "%s,%s #%d,-%d.%02d,USD,%s\n",
                  SeedDate(dates, file_index, users, rows, t).c_str(), kDesc[k], file_index,
                  10 + (t * 37 + file_index) % 500, (t * 13) % 100, kDesc[k]);
    out += line;
  }
  return out;
}

const std::string kBoundary = "----lastcallbench7f3a";

std::string Multipart(const std::string& account_id, DateShape dates, int file_index, int users,
                      int rows) {
  std::string b;
  b += "--" + kBoundary + "\r\nContent-Disposition: form-data; name=\"accountId\"\r\n\r\n";
  b += account_id + "\r\n";
  b += "--" + kBoundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"statement-" +
       std::to_string(file_index) + ".csv\"\r\nContent-Type: text/csv\r\n\r\n";
  b += Csv(dates, file_index, users, rows);
  b += "\r\n--" + kBoundary + "--\r\n";
  return b;
}

json PercentilesJson(const Percentiles& p) {
  return {{"p50", p.p50}, {"p90", p.p90}, {"p99", p.p99}, {"max", p.max}, {"mean", p.mean},
          {"count", p.count}};
}

// Polls until every bus target's cursor reached the newest outbox row. On NATS (no cursors):
// until the relay has published every outbox row and the targets' records (processed and dead
// letters) have not grown for a second.
bool WaitConsumers(ReadOnlyDb& db, ServerProcess& server, bool nats, double timeout_s, double* waited) {
  double start = MonoSeconds();
  int64_t last_records = -1;
  double stable_since = start;
  while (MonoSeconds() - start < timeout_s) {
    if (nats) {
      auto rows = db.Ints(
          "SELECT (SELECT COUNT(*) FROM outbox WHERE relayed_at IS NULL), "
          "(SELECT COUNT(*) FROM processed) + (SELECT COUNT(*) FROM dead_letters)");
      if (!rows.empty() && rows[0][1] != last_records) {
        last_records = rows[0][1];
        stable_since = MonoSeconds();
      }
      if (!rows.empty() && rows[0][0] == 0 && MonoSeconds() - stable_since >= 1.0) {
        *waited = MonoSeconds() - start;
        return true;
      }
    } else {
      auto rows = db.Ints(
          "SELECT (SELECT COALESCE(MAX(seq), 0) FROM outbox), (SELECT COALESCE(MIN(last_seq), 0) "
          "FROM delivery_cursors), (SELECT COUNT(*) FROM delivery_cursors)");
      if (!rows.empty() && rows[0][2] >= kBusTargets && rows[0][1] >= rows[0][0]) {
        *waited = MonoSeconds() - start;
        return true;
      }
    }
    if (!server.running()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  *waited = MonoSeconds() - start;
  return false;
}

struct SeededFile {
  std::string id;
  int user = 0;
};

struct DeleteJob {
  std::string coordination_id;
  int status = 0;
  int64_t send_wall_us = 0;
  int64_t scheduled_wall_us = 0;
  int64_t latency_us = 0;
};

// Sends DELETE for every file in `files` (closed loop, or open loop at `rate`), waits until all
// their coordinations completed, and reports throughput and latencies.
json DeletePhase(const Options& o, const std::string& label, ServerProcess& server, ReadOnlyDb& db,
                 const std::vector<SeededFile>& files, const std::vector<std::string>& tokens,
                 double rate) {
  std::vector<DeleteJob> jobs(files.size());
  LoadOptions lo;
  lo.port = server.port();
  lo.connections = o.connections;
  lo.threads = o.client_threads;
  lo.rate = rate;
  double server_cpu0 = ProcCpuSeconds(server.pid());
  auto threads0 = ThreadCpuSeconds(server.pid());
  ProcIo io0 = ReadProcIo(server.pid());
  pid_t perf = -1;
  if (!o.perf_dir.empty() && rate == 0) {
    fs::create_directories(o.perf_dir);
    std::string out = (fs::path(o.perf_dir) / ("perf-" + label.substr(1, label.find(']') - 1) + ".data")).string();
    perf = StartPerf(server.pid(), out);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    Note("perf record -> " + out);
  }
  pid_t attached = -1;
  if (!o.attach.empty() && rate == 0) {
    std::string mode = label.substr(1, label.find(']') - 1);
    attached = StartAttached(
        Substitute(Substitute(o.attach, "{pid}", std::to_string(server.pid())), "{mode}", mode));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  double client_cpu0 = SelfCpuSeconds();
  Note(label + ": DELETE " + std::to_string(files.size()) + " files" +
       (rate > 0 ? " at " + std::to_string(static_cast<int>(rate)) + "/s (open loop)"
                 : " from " + std::to_string(o.connections) + " connections (closed loop)"));
  LoadSummary sum = RunLoad(
      lo, files.size(),
      [&](uint64_t i, HttpRequestSpec& s) {
        s.method = "DELETE";
        s.target = "/files/" + files[i].id;
        s.authorization = tokens[files[i].user];
      },
      [&](uint64_t i, HttpResult&& r) {
        DeleteJob& j = jobs[i];
        j.status = r.status;
        j.send_wall_us = r.send_wall_us;
        j.scheduled_wall_us = r.scheduled_wall_us;
        j.latency_us = r.latency_us;
        if (r.status == 202) {
          auto body = json::parse(r.body, nullptr, false);
          if (body.is_object()) j.coordination_id = body.value("coordinationId", "");
        } else if (r.status != 0) {
          static int shown = 0;
          if (shown++ < 5) Note("DELETE answered " + std::to_string(r.status) + ": " + r.body);
        }
      });
  int64_t accepted = 0;
  for (const auto& j : jobs) accepted += j.status == 202 && !j.coordination_id.empty();
  Note(label + ": " + std::to_string(accepted) + " accepted (202) in " +
       std::to_string(sum.elapsed_s) + " s; waiting for the coordinations to complete");

  // Wait for completion: no coordination left waiting for its consumers or being deleted (every
  // one was created before its 202). The rate does not depend on when this notices (it is taken
  // from the stamps), so the poll is gentle: every 50 ms, over the in-flight coordinations only.
  // A count of the completed ones every 10 ms grew with the database and took PostgreSQL 0.4 ms
  // a call, about 2% of its statement time during the phase it measured.
  double wait_start = MonoSeconds();
  double timeout = 120 + static_cast<double>(files.size()) / 100.0;
  while (MonoSeconds() - wait_start < timeout) {
    // A failed read (no row) is not "none left": it is logged, and the wait goes on.
    auto in_flight =
        db.Ints("SELECT COUNT(*) FROM coordinations WHERE status IN ('waiting', 'deleting')");
    bool none_left = !in_flight.empty() && !in_flight[0].empty() && in_flight[0][0] == 0;
    if (none_left || !server.running()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  double server_cpu = ProcCpuSeconds(server.pid()) - server_cpu0;
  double busy_s = MonoSeconds() - wait_start + sum.elapsed_s;
  auto threads1 = ThreadCpuSeconds(server.pid());
  ProcIo io1 = ReadProcIo(server.pid());
  StopPerf(perf);
  StopPerf(attached);
  json per_thread = json::array();
  for (size_t k = 0; k < threads1.size(); ++k) {
    double before = 0;
    for (const auto& [tid, cpu] : threads0) {
      if (tid == threads1[k].first) before = cpu;
    }
    double used = threads1[k].second - before;
    std::string comm = ReadFileOr("/proc/" + std::to_string(server.pid()) + "/task/" +
                                      std::to_string(threads1[k].first) + "/comm", "");
    while (!comm.empty() && comm.back() == '\n') comm.pop_back();
    per_thread.push_back({{"thread", ThreadLabel(k, comm)},
                          {"cpuSeconds", used},
                          {"busyShare", busy_s > 0 ? used / busy_s : 0}});
  }
  double client_cpu = SelfCpuSeconds() - client_cpu0;
  double settle_wait = 0;
  WaitConsumers(db, server, !o.nats_url.empty(), 60, &settle_wait);

  // When each coordination's file.deleted was appended: its timeline's `deleted` entry, stamped in
  // the same unit with the same time as the event. Not the outbox row itself: retention prunes
  // delivered events after LASTCALL_OUTBOX_RETENTION_SECONDS (60 s by default), so in a phase
  // longer than that the first events were gone before this read (the 20,000-file half load lost
  // 42% of them). The timeline is never pruned.
  auto deleted_at = db.TextToInt(
      "SELECT coordination_id, at FROM coordination_timeline WHERE kind = 'deleted'");
  auto in_server = db.TextToInt(
      "SELECT id, completed_at - started_at FROM coordinations WHERE status = 'completed'");
  std::vector<double> e2e, ack, server_ms;
  int64_t first_send_us = INT64_MAX, last_send_us = 0, last_deleted_ms = 0, missing = 0;
  for (const auto& j : jobs) {
    if (j.status == 0) continue;
    first_send_us = std::min(first_send_us, j.send_wall_us);
    last_send_us = std::max(last_send_us, j.send_wall_us);
    if (j.status != 202) continue;
    ack.push_back(static_cast<double>(j.latency_us) / 1000.0);
    auto it = deleted_at.find(j.coordination_id);
    if (it == deleted_at.end()) {
      ++missing;
      continue;
    }
    last_deleted_ms = std::max(last_deleted_ms, it->second);
    // The server stamps whole milliseconds (floor): its true time lies in [ms, ms + 1).
    e2e.push_back(static_cast<double>(it->second) + 0.5 -
                  static_cast<double>(j.send_wall_us) / 1000.0);
    auto s = in_server.find(j.coordination_id);
    if (s != in_server.end()) server_ms.push_back(static_cast<double>(s->second));
  }
  double span_s = (static_cast<double>(last_deleted_ms) + 0.5 -
                   static_cast<double>(first_send_us) / 1000.0) / 1000.0;
  double per_s = span_s > 0 ? static_cast<double>(e2e.size()) / span_s : 0;
  double send_span_s = static_cast<double>(last_send_us - first_send_us) / 1e6;
  json out = {
      {"files", files.size()},
      {"accepted", accepted},
      {"completed", e2e.size()},
      {"notCompleted", missing},
      {"non202", static_cast<int64_t>(files.size()) - accepted},
      {"transportFailures", sum.failed},
      {"reconnects", sum.reconnects},
      {"sendSeconds", sum.elapsed_s},
      {"seconds", span_s},
      {"deletionsPerSecond", per_s},
      {"sendRatePerSecond", send_span_s > 0 ? static_cast<double>(files.size() - 1) / send_span_s : 0},
      {"latencyMs", PercentilesJson(Summarize(e2e))},
      {"ackMs", PercentilesJson(Summarize(ack))},
      {"serverInternalMs", PercentilesJson(Summarize(server_ms))},
      {"serverCpuSeconds", server_cpu},
      {"clientCpuSeconds", client_cpu},
      {"serverThreads", per_thread},
      {"serverIoPerDeletion",
       {{"writeSyscalls", (io1.syscw - io0.syscw) / std::max<double>(1, e2e.size())},
        {"bytesWritten", (io1.wchar - io0.wchar) / std::max<double>(1, e2e.size())},
        {"readSyscalls", (io1.syscr - io0.syscr) / std::max<double>(1, e2e.size())},
        {"storageBytesWritten", (io1.write_bytes - io0.write_bytes) / std::max<double>(1, e2e.size())}}},
      {"serverCpuMicrosPerDeletion",
       e2e.empty() ? 0 : server_cpu * 1e6 / static_cast<double>(e2e.size())},
  };
  if (rate > 0) {
    out["targetRate"] = rate;
    out["startedLate"] = sum.delayed;
    out["maxStartDelayMs"] = sum.max_delay_ms;
  }
  auto e = Summarize(e2e);
  auto a = Summarize(ack);
  char line[400];
  std::snprintf(line, sizeof line,
                "%s: %.0f deletions/s over %.2f s; DELETE->file.deleted p50 %.1f p90 %.1f p99 %.1f "
                "max %.1f ms; 202 p50 %.2f p99 %.2f ms; server CPU %.1f us/deletion",
                label.c_str(), per_s, span_s, e.p50, e.p90, e.p99, e.max, a.p50, a.p99,
                out["serverCpuMicrosPerDeletion"].get<double>());
  Note(line);
  return out;
}

// Drops every table of lastcall's in the database at url, so that a run starts empty as it does on
// a fresh SQLite file.
bool ResetPostgres(const std::string& url, std::string* error) {
  auto pg = lastcall::PostgresDatabase::Open({url});
  if (!pg.ok()) {
    *error = pg.status().message();
    return false;
  }
  lastcall::Status st = (*pg)->WriteSync([](lastcall::SqlTx& tx) -> lastcall::Status {
    auto r = tx.Exec("DROP SCHEMA public CASCADE");
    if (!r.ok()) return r.status();
    r = tx.Exec("CREATE SCHEMA public");
    return r.ok() ? lastcall::Status::Ok() : r.status();
  });
  (*pg)->Close();
  if (!st.ok()) *error = st.message();
  return st.ok();
}

json RunMode(const Options& o, const std::string& mode, const fs::path& work) {
  json result = {{"synchronous", mode}};
  fs::path dir = work / ("mode-" + mode);
  fs::create_directories(dir / "data");
  std::string secret = lastcall::RandomHex(24);
  std::map<std::string, std::string> env = ServerEnvFor(o, dir / "data", secret, mode);
  if (!o.nats_url.empty()) {
    env["LASTCALL_NATS_URL"] = o.nats_url;
    result["bus"] = "nats";
  }
  if (!o.database_url.empty()) {
    env["LASTCALL_DATABASE_URL"] = o.database_url;
    result["database"] = "postgresql";
    std::string reset_error;
    if (!ResetPostgres(o.database_url, &reset_error)) {
      result["error"] = reset_error;
      Note("[" + mode + "] " + reset_error);
      return result;
    }
  }
  ServerProcess server;
  std::string error;
  Note("[" + mode + "] starting " + o.lastcall + " serve in " + dir.string());
  if (!server.Start(o.lastcall, env, (dir / "server.log").string(), 30, &error)) {
    result["error"] = error;
    Note("[" + mode + "] " + error);
    return result;
  }
  std::unique_ptr<ReadOnlyDb> db_holder =
      o.database_url.empty() ? std::make_unique<ReadOnlyDb>((dir / "data" / "lastcall.db").string())
                             : ReadOnlyDb::Postgres(o.database_url);
  ReadOnlyDb& db = *db_holder;
  std::vector<std::string> tokens;
  for (int u = 0; u < o.users; ++u) tokens.push_back(Bearer(secret, "bench-user-" + std::to_string(u)));

  LoadOptions lo;
  lo.port = server.port();
  lo.connections = o.connections;
  lo.threads = o.client_threads;

  // Seed: one account per user, then the files (both batches) as multipart uploads.
  std::vector<std::string> accounts(o.users);
  double t = MonoSeconds();
  RunLoad(
      lo, o.users,
      [&](uint64_t i, HttpRequestSpec& s) {
        s.method = "POST";
        s.target = "/accounts";
        s.authorization = tokens[i];
        s.content_type = "application/json";
        s.body = R"({"name":"Checking","currency":"USD"})";
      },
      [&](uint64_t i, HttpResult&& r) {
        auto body = json::parse(r.body, nullptr, false);
        if (r.status == 201 && body.is_object()) accounts[i] = body.value("accountId", "");
      });
  for (const auto& a : accounts) {
    if (a.empty()) {
      result["error"] = "account creation failed";
      return result;
    }
  }
  int batches = o.skip_half ? 1 : 2;
  int total_files = o.files * batches;
  std::vector<SeededFile> all(total_files);
  int64_t upload_errors = 0;
  Note("[" + mode + "] uploading " + std::to_string(total_files) + " files of " +
       std::to_string(o.transactions) + " transactions for " + std::to_string(o.users) + " users");
  double t_up = MonoSeconds();
  LoadSummary up = RunLoad(
      lo, total_files,
      [&](uint64_t i, HttpRequestSpec& s) {
        int u = static_cast<int>(i % o.users);
        s.method = "POST";
        s.target = "/files";
        s.authorization = tokens[u];
        s.content_type = "multipart/form-data; boundary=" + kBoundary;
        s.body = Multipart(accounts[u], o.dates, static_cast<int>(i), o.users, o.transactions);
      },
      [&](uint64_t i, HttpResult&& r) {
        auto body = json::parse(r.body, nullptr, false);
        if (r.status == 201 && body.is_object()) {
          all[i] = {body.value("fileId", ""), static_cast<int>(i % o.users)};
        } else {
          if (upload_errors++ < 5) Note("upload answered " + std::to_string(r.status) + ": " + r.body);
        }
      });
  double upload_s = MonoSeconds() - t_up;
  double consumers_s = 0;
  bool caught_up = WaitConsumers(db, server, !o.nats_url.empty(), 600, &consumers_s);
  result["seed"] = {{"users", o.users},
                    {"files", total_files},
                    {"uploadErrors", upload_errors},
                    {"uploadSeconds", upload_s},
                    {"uploadsPerSecond", up.elapsed_s > 0 ? total_files / up.elapsed_s : 0},
                    {"consumersCaughtUp", caught_up},
                    {"consumersExtraSeconds", consumers_s},
                    {"totalSeconds", MonoSeconds() - t}};
  Note("[" + mode + "] seeded in " + std::to_string(MonoSeconds() - t) + " s (consumers caught up " +
       std::to_string(consumers_s) + " s after the last upload)");
  if (upload_errors > 0 || !caught_up) {
    result["error"] = "seeding failed (" + std::to_string(upload_errors) + " upload errors)";
    return result;
  }
  std::vector<SeededFile> batch1(all.begin(), all.begin() + o.files);
  std::vector<SeededFile> batch2(all.begin() + o.files, all.end());

  // GET /files/{id} over keep-alive for a fixed time, on files that exist.
  if (!o.skip_get) {
    LoadOptions g = lo;
    g.duration_s = o.get_seconds;
    g.keep_bodies = false;
    std::vector<double> lat;
    lat.reserve(1 << 20);
    int64_t ok = 0, other = 0;
    pid_t perf = -1;
    if (!o.perf_dir.empty()) {
      fs::create_directories(o.perf_dir);
      perf = StartPerf(server.pid(), (fs::path(o.perf_dir) / ("perf-" + mode + "-get.data")).string());
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
    double get_server_cpu0 = ProcCpuSeconds(server.pid());
    double get_client_cpu0 = SelfCpuSeconds();
    LoadSummary gs = RunLoad(
        g, batch1.size(),
        [&](uint64_t i, HttpRequestSpec& s) {
          const SeededFile& f = batch1[i % batch1.size()];
          s.method = "GET";
          s.target = "/files/" + f.id;
          s.authorization = tokens[f.user];
        },
        [&](uint64_t, HttpResult&& r) {
          if (r.status == 200) {
            ++ok;
            lat.push_back(static_cast<double>(r.latency_us) / 1000.0);
          } else {
            ++other;
          }
        });
    double get_server_cpu = ProcCpuSeconds(server.pid()) - get_server_cpu0;
    double get_client_cpu = SelfCpuSeconds() - get_client_cpu0;
    StopPerf(perf);
    auto p = Summarize(lat);
    result["get"] = {{"requests", ok},
                     {"serverCpuMicrosPerRequest", ok > 0 ? get_server_cpu * 1e6 / static_cast<double>(ok) : 0},
                     {"clientCpuMicrosPerRequest", ok > 0 ? get_client_cpu * 1e6 / static_cast<double>(ok) : 0},
                     {"non200", other},
                     {"seconds", gs.elapsed_s},
                     {"perSecond", gs.elapsed_s > 0 ? static_cast<double>(ok) / gs.elapsed_s : 0},
                     {"latencyMs", PercentilesJson(p)},
                     {"connections", o.connections},
                     {"clientThreads", o.client_threads}};
    char line[200];
    std::snprintf(line, sizeof line, "[%s] GET /files/{id}: %.0f/s, p50 %.2f ms, p99 %.2f ms",
                  mode.c_str(), result["get"]["perSecond"].get<double>(), p.p50, p.p99);
    Note(line);
  }

  // Full load, then half load on the second batch.
  json full = DeletePhase(o, "[" + mode + "] full load", server, db, batch1, tokens, 0);
  result["fullLoad"] = full;
  if (!o.skip_half) {
    double rate = full["deletionsPerSecond"].get<double>() / 2.0;
    if (rate < 1) rate = 1;
    result["halfLoad"] = DeletePhase(o, "[" + mode + "] half load", server, db, batch2, tokens, rate);
  }
  ProcMemory mem = ReadProcMemory(server.pid());
  result["serverPeakRssMiB"] = static_cast<double>(mem.hwm_kib) / 1024.0;
  result["serverRssMiB"] = static_cast<double>(mem.rss_kib) / 1024.0;
  int status = server.Stop();
  result["serverExit"] = status;
  Note("[" + mode + "] server peak RSS " + std::to_string(mem.hwm_kib / 1024) + " MiB; stopped");

  if (!o.skip_raw) {
    RawOptions ro;
    ro.path = (dir / "raw.db").string();
    ro.synchronous = mode;
    ro.users = o.users;
    ro.files_seeded = total_files;
    ro.units = o.files;
    ro.transactions = o.transactions;
    ro.dates = o.dates;
    ro.batch = o.raw_batch;
    ro.cache_mib = o.raw_cache_mib;
    Note("[" + mode + "] raw limit: seeding " + std::to_string(total_files) + " files, then " +
         std::to_string(o.files) + " units, " + std::to_string(o.raw_batch) + " per transaction");
    RawResult raw = RunRawLimit(ro);
    if (!raw.ok) {
      result["raw"] = {{"error", raw.error}};
      Note("raw limit failed: " + raw.error);
    } else {
      result["raw"] = {{"unitsPerSecond", raw.units_per_s}, {"units", raw.units},
                       {"seconds", raw.elapsed_s},          {"commits", raw.commits},
                       {"batch", o.raw_batch},              {"seedSeconds", raw.seed_s},
                       {"cacheMiB", o.raw_cache_mib}};
      double ratio = raw.units_per_s > 0 ? full["deletionsPerSecond"].get<double>() / raw.units_per_s : 0;
      result["ratioToRaw"] = ratio;
      char line[200];
      std::snprintf(line, sizeof line, "[%s] raw limit %.0f units/s; lastcall/raw = %.3f", mode.c_str(),
                    raw.units_per_s, ratio);
      Note(line);
    }
  }
  return result;
}

json RunSweep(const Options& o, int64_t waiting, const fs::path& work) {
  json r = {{"waitingFar", waiting}, {"due", o.sweep_due}, {"synchronous", o.sweep_mode}};
  fs::path dir = work / ("sweep-" + std::to_string(waiting + o.sweep_due));
  fs::create_directories(dir / "data");
  std::string db_path = (dir / "data" / "lastcall.db").string();
  std::string error;
  if (!CreateSchema(db_path, o.sweep_mode, &error)) {
    r["error"] = error;
    return r;
  }
  Note("sweep: inserting " + std::to_string(waiting) + " waiting coordinations (far deadlines)");
  SweepSeed far = SeedWaiting(db_path, waiting, WallMillis() + 30LL * 86400 * 1000, 1);
  if (!far.ok) {
    r["error"] = far.error;
    return r;
  }
  r["seedSeconds"] = far.seconds;
  int64_t deadline = WallMillis() + static_cast<int64_t>(o.sweep_lead_s * 1000);
  SweepSeed due = SeedWaiting(db_path, o.sweep_due, deadline, 2);
  if (!due.ok) {
    r["error"] = due.error;
    return r;
  }
  std::map<std::string, std::string> env =
      ServerEnvFor(o, dir / "data", lastcall::RandomHex(24), o.sweep_mode);
  ServerProcess server;
  double t_start = MonoSeconds();
  if (!server.Start(o.lastcall, env, (dir / "server.log").string(), 60, &error)) {
    r["error"] = error;
    return r;
  }
  int64_t ready = WallMillis();
  r["startSeconds"] = MonoSeconds() - t_start;
  r["readyBeforeDeadline"] = ready < deadline;
  r["readyMsBeforeDeadline"] = deadline - ready;
  // Memory while everything waits, just before the deadline.
  while (WallMillis() < deadline - 100) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ProcMemory idle = ReadProcMemory(server.pid());
  ReadOnlyDb db(db_path);
  int64_t completed = 0;
  double t0 = MonoSeconds();
  while (MonoSeconds() - t0 < 120 + o.sweep_lead_s) {
    completed = db.Scalar("SELECT COUNT(*) FROM coordinations WHERE status = 'completed'");
    if (completed >= o.sweep_due || !server.running()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  auto span = db.Ints(
      "SELECT MIN(completed_at), MAX(completed_at) FROM coordinations WHERE status = 'completed'");
  ProcMemory mem = ReadProcMemory(server.pid());
  server.Stop();
  r["completed"] = completed;
  if (!span.empty() && completed > 0) {
    r["firstCompletedMsAfterDeadline"] = span[0][0] - deadline;
    r["sweepMs"] = span[0][1] - deadline;
  }
  r["rssBeforeDeadlineMiB"] = static_cast<double>(idle.rss_kib) / 1024.0;
  r["rssAfterMiB"] = static_cast<double>(mem.rss_kib) / 1024.0;
  r["peakRssMiB"] = static_cast<double>(mem.hwm_kib) / 1024.0;
  Note("sweep with " + std::to_string(waiting + o.sweep_due) + " waiting: " +
       std::to_string(completed) + " completed, sweep " + r.value("sweepMs", json(-1)).dump() +
       " ms after the deadline, peak RSS " + std::to_string(mem.hwm_kib / 1024) + " MiB");
  return r;
}

void WriteReports(const Options& o, const json& results);

}  // namespace
}  // namespace bench

int main(int argc, char** argv) {
  using namespace bench;
  // The raw limit's writer gets the server's page cache (store/sqlite/page_cache.h), before any
  // SQLite use here initializes the library.
  (void)lastcall::InstallSqlitePageCache();
  Options o;
  CLI::App app{"lastcall_bench: coordinated deletion end to end against a real `lastcall serve`"};
  app.add_option("--lastcall", o.lastcall, "the lastcall binary")->capture_default_str();
  app.add_option("--users", o.users, "users (U)")->capture_default_str()->check(CLI::Range(1, 100000));
  app.add_option("--files", o.files, "files per batch (F); two batches: full and half load")
      ->capture_default_str()->check(CLI::Range(1, 10000000));
  app.add_option("--transactions", o.transactions, "transactions per file (T)")
      ->capture_default_str()->check(CLI::Range(1, 100000));
  app.add_option("--dates", o.dates,
                 "how each file's transactions spread over dates: statement (successive periods "
                 "per account) or scattered (every file across the same three months)")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, DateShape>{{"statement", DateShape::kStatement},
                                           {"scattered", DateShape::kScattered}},
          CLI::ignore_case))
      ->default_str("statement");
  app.add_option("--connections", o.connections, "concurrent keep-alive connections (C)")
      ->capture_default_str()->check(CLI::Range(1, 4096));
  app.add_option("--client-threads", o.client_threads, "client I/O threads (closed loops)")
      ->capture_default_str()->check(CLI::Range(1, 64));
  app.add_option("--http-threads", o.http_threads, "LASTCALL_HTTP_THREADS for the server (0: its default)")
      ->capture_default_str()->check(CLI::Range(0, 256));
  app.add_option("--modes", o.modes, "SQLite synchronous modes to run")
      ->capture_default_str()->delimiter(',')->check(CLI::IsMember({"NORMAL", "FULL"}));
  app.add_option("--get-seconds", o.get_seconds, "duration of the GET /files/{id} load")->capture_default_str();
  app.add_option("--raw-batch", o.raw_batch, "units per transaction in the raw limit")->capture_default_str();
  app.add_option("--raw-cache-mib", o.raw_cache_mib,
                 "SQLite page cache of the raw limit in MiB, as the server's writer (0: SQLite's default of 2 MiB)")
      ->capture_default_str();
  app.add_option("--sweep-waiting", o.sweep_waiting, "far-deadline coordinations in the big sweep run")
      ->capture_default_str();
  app.add_option("--sweep-due", o.sweep_due, "coordinations falling due in each sweep run")->capture_default_str();
  app.add_option("--sweep-mode", o.sweep_mode, "synchronous mode of the sweep runs")
      ->capture_default_str()->check(CLI::IsMember({"NORMAL", "FULL"}));
  app.add_option("--sweep-lead", o.sweep_lead_s, "seconds from seeding to the deadline")->capture_default_str();
  app.add_option("--render-only", o.render_only,
                 "rewrite the Markdown and SVG from this results JSON (e.g. after editing the "
                 "profile notes); runs nothing");
  app.add_option("--database-url", o.database_url,
                 "run the server on this PostgreSQL database (its tables are dropped first!); "
                 "--modes then only names the runs");
  app.add_option("--nats-url", o.nats_url,
                 "the server's event bus: NATS JetStream at this URL (LASTCALL_NATS_URL; the "
                 "server does not inherit the bench's LASTCALL_* variables)");
  app.add_option("--server-env", o.server_env,
                 "KEY=VALUE passed to the server (repeatable; the server does not inherit the "
                 "bench's LASTCALL_* variables), e.g. --server-env LASTCALL_SQLITE_MEMORY_MIB=0");
  app.add_flag("--raw-only", o.raw_only, "only the raw SQLite limit, printed (no report files)");
  app.add_flag("--skip-sweep", o.skip_sweep, "skip the deadline sweep");
  app.add_flag("--skip-raw", o.skip_raw, "skip the raw SQLite limit");
  app.add_flag("--skip-get", o.skip_get, "skip the GET load");
  app.add_flag("--skip-half", o.skip_half, "skip the half-load phase (and its second batch)");
  app.add_option("--log-level", o.log_level, "LASTCALL_LOG_LEVEL of the server")->capture_default_str();
  app.add_option("--work-dir", o.work_dir, "where data folders go (default: a new folder under $TMPDIR)");
  app.add_flag("--keep-work", o.keep_work, "keep the data folders and server logs");
  app.add_option("--out", o.out_md, "the Markdown report (empty: none)")->capture_default_str();
  app.add_option("--json", o.out_json, "the JSON results (empty: none)")->capture_default_str();
  app.add_option("--svg", o.out_svg, "the SVG chart (empty: none)")->capture_default_str();
  app.add_option("--perf-dir", o.perf_dir, "record the server with perf during each full load, into this folder");
  app.add_option("--perf-args", g_perf_args, "arguments of `perf record` for --perf-dir")->capture_default_str();
  app.add_option("--attach", o.attach,
                 "a command run during each full load and stopped with SIGINT after it, e.g. "
                 "'strace -f -c -o /tmp/strace-{mode}.txt -p {pid}'");
  app.add_option("--profile-notes", o.profile_notes, "Markdown included as the profile section")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  lastcall::log::SetLevel(lastcall::log::Level::kWarn);  // Migrate's notes in this process

  if (!o.render_only.empty()) {
    json results = json::parse(ReadFileOr(o.render_only, ""), nullptr, false);
    if (!results.is_object()) {
      std::fprintf(stderr, "lastcall_bench: %s is not a results JSON\n", o.render_only.c_str());
      return 2;
    }
    results["targets"] = EvaluateTargets(results);
    WriteReports(o, results);
    std::cout << RenderSummary(results);
    return 0;
  }
  if (auto env = ServerEnv(o); !env.ok()) {
    std::fprintf(stderr, "lastcall_bench: %s\n", env.status().message().c_str());
    return 2;
  } else {
    o.server_vars = std::move(env).value();
  }
  if (!fs::exists(o.lastcall)) {
    std::fprintf(stderr, "lastcall_bench: no lastcall binary at %s (see --lastcall)\n", o.lastcall.c_str());
    return 2;
  }
  o.lastcall = fs::absolute(o.lastcall).string();
  fs::path work = o.work_dir.empty()
                      ? fs::temp_directory_path() / ("lastcall-bench-" + lastcall::RandomHex(4))
                      : fs::path(o.work_dir);
  fs::create_directories(work);

  if (o.raw_only) {
    for (const auto& mode : o.modes) {
      RawOptions ro;
      ro.path = (work / ("raw-" + mode + ".db")).string();
      ro.synchronous = mode;
      ro.users = o.users;
      ro.files_seeded = o.files * (o.skip_half ? 1 : 2);
      ro.units = o.files;
      ro.transactions = o.transactions;
      ro.dates = o.dates;
      ro.batch = o.raw_batch;
      ro.cache_mib = o.raw_cache_mib;
      RawResult raw = RunRawLimit(ro);
      std::printf("%s: %s %.0f units/s (%lld units, %lld commits, %.3f s; seeding %.1f s)\n", mode.c_str(),
                  raw.ok ? "" : raw.error.c_str(), raw.units_per_s, static_cast<long long>(raw.units),
                  static_cast<long long>(raw.commits), raw.elapsed_s, raw.seed_s);
    }
    if (!o.keep_work) fs::remove_all(work);
    return 0;
  }
  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
  MachineInfo m = ReadMachineInfo();
  double started = MonoSeconds();
  // The source the measured binary was built from, as far as the working folder tells.
  std::string revision;
  if (FILE* p = ::popen("git describe --always --dirty 2>/dev/null", "r")) {
    char buf[128] = {0};
    if (std::fgets(buf, sizeof buf, p)) revision = buf;
    ::pclose(p);
    while (!revision.empty() && (revision.back() == '\n' || revision.back() == ' ')) revision.pop_back();
  }
  json results = {
      {"generatedAt", lastcall::FormatRfc3339(WallMillis())},
      {"command", command},
      {"sourceRevision", revision},
      {"machine",
       {{"nproc", m.nproc},
        {"cpuModel", m.cpu_model},
        {"memTotalMiB", m.mem_total_mib},
        {"kernel", m.kernel},
        {"loadAvgAtStart", m.loadavg},
        {"workDirFileSystem", FileSystemType(work.string())}}},
      {"parameters",
       {{"users", o.users},
        {"files", o.files},
        {"transactions", o.transactions},
        {"dates", DateShapeName(o.dates)},
        {"connections", o.connections},
        {"clientThreads", o.client_threads},
        {"httpThreads", o.http_threads},
        {"modes", o.modes},
        {"getSeconds", o.get_seconds},
        {"rawBatch", o.raw_batch},
        {"rawCacheMiB", o.raw_cache_mib},
        {"sweepWaiting", o.skip_sweep ? 0 : o.sweep_waiting},
        {"sweepDue", o.sweep_due},
        {"sweepMode", o.sweep_mode},
        {"logLevel", o.log_level},
        {"serverEnv", o.server_env}}},
      {"modes", json::array()},
  };
  if (results["machine"]["workDirFileSystem"] == "tmpfs") {
    Note("warning: the work folder is on tmpfs; fsync costs nothing there (use --work-dir on a disk)");
  }
  for (const auto& mode : o.modes) results["modes"].push_back(RunMode(o, mode, work));
  if (!o.skip_sweep) {
    json sweep = json::array();
    sweep.push_back(RunSweep(o, o.sweep_waiting, work));
    sweep.push_back(RunSweep(o, 0, work));
    results["sweep"] = sweep;
  }
  results["machine"]["loadAvgAtEnd"] = ReadLoadAvg();
  results["durationSeconds"] = MonoSeconds() - started;
  results["targets"] = EvaluateTargets(results);

  if (!o.out_json.empty()) WriteFileAtomically(o.out_json, results.dump(2) + "\n");
  WriteReports(o, results);
  std::cout << RenderSummary(results);
  if (!o.keep_work) {
    std::error_code ec;
    fs::remove_all(work, ec);
  } else {
    Note("kept " + work.string());
  }
  return 0;
}

namespace bench {
namespace {

void WriteReports(const Options& o, const json& results) {
  if (!o.out_svg.empty()) WriteFileAtomically(o.out_svg, RenderSvg(results));
  if (!o.out_md.empty()) {
    std::string notes = ReadFileOr(o.profile_notes, "");
    std::string svg_rel;
    if (!o.out_svg.empty()) {
      svg_rel = fs::relative(fs::absolute(o.out_svg), fs::absolute(o.out_md).parent_path()).string();
    }
    std::string json_rel;
    if (!o.out_json.empty()) {
      json_rel = fs::relative(fs::absolute(o.out_json), fs::absolute(o.out_md).parent_path()).string();
    }
    WriteFileAtomically(o.out_md, RenderMarkdown(results, svg_rel, json_rel, notes));
  }
}

}  // namespace
}  // namespace bench
