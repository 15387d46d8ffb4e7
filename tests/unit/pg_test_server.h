// A throwaway PostgreSQL server for the unit tests of the PostgreSQL engine: started once per test
// process by tests/integration/pg_service.py (initdb + pg_ctl in a temporary folder on a free
// loopback port, as the unprivileged postgres user when run as root) and removed when the process
// ends, however it ends. Tests whose suite name starts with "Postgres" use it; CTest runs them as
// one test (unit.postgres) so that the server starts once.
#pragma once

#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>

#include <gtest/gtest.h>

namespace lastcall::testing {

// Runs a command; its stdout without the trailing newline, or "" (and a test failure) on error.
inline std::string CommandOutput(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) {
    ADD_FAILURE() << "cannot run " << cmd;
    return "";
  }
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  int rc = ::pclose(p);
  if (rc != 0) {
    ADD_FAILURE() << cmd << " exited with " << rc << ": " << out;
    return "";
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

// The folder of this process's server (started on first use).
inline const std::string& TestPostgresDir() {
  static std::once_flag once;
  static std::string dir;
  std::call_once(once, [] {
    std::string json = CommandOutput(std::string("python3 ") + LASTCALL_PG_SERVICE + " start " +
                                     std::to_string(::getpid()));
    // {"url": "...", "dir": "...", "port": N}
    size_t k = json.find("\"dir\": \"");
    if (k == std::string::npos) {
      ADD_FAILURE() << "pg_service.py start printed " << json;
      return;
    }
    size_t start = k + 8;
    dir = json.substr(start, json.find('"', start) - start);
    std::atexit([] {
      if (!dir.empty()) (void)std::system((std::string("python3 ") + LASTCALL_PG_SERVICE + " stop " + dir).c_str());
    });
  });
  return dir;
}

// The URL of a fresh, empty database on this process's server.
inline std::string FreshPostgresDatabase() {
  const std::string& dir = TestPostgresDir();
  if (dir.empty()) return "";
  return CommandOutput(std::string("python3 ") + LASTCALL_PG_SERVICE + " createdb " + dir);
}

}  // namespace lastcall::testing
