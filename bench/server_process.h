// Starts a real `lastcall serve` as a child process on a free loopback port, waits for it to
// answer, reads its memory from /proc, and stops it.
#pragma once

#include <sys/types.h>

#include <map>
#include <string>

namespace bench {

class ServerProcess {
 public:
  // env: variables set for the child on top of this process's environment, from which every
  // LASTCALL_* variable and the seed's (ENABLE_EVENT_PUBLISHING, COORDINATION_TIMEOUT_MINUTES,
  // EXPECTED_CONSUMERS) are removed first. The child's stdout and stderr go to log_path.
  // Returns false (with *error) when it did not answer GET /healthz within timeout_s.
  bool Start(const std::string& binary, const std::map<std::string, std::string>& env,
             const std::string& log_path, double timeout_s, std::string* error);
  // SIGTERM, then SIGKILL after timeout_s. Returns the exit status as waitpid gave it (-1 if none).
  int Stop(double timeout_s = 15.0);
  ~ServerProcess();

  pid_t pid() const { return pid_; }
  unsigned short port() const { return port_; }
  bool running();

 private:
  pid_t pid_ = -1;
  unsigned short port_ = 0;
};

// A TCP port on 127.0.0.1 that was free a moment ago.
unsigned short FreeLoopbackPort();

}  // namespace bench
