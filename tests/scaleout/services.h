// Throwaway servers for the scale-out tests: each runs as a child process on a free loopback port
// with its data in a temporary folder, and is killed (SIGKILL) when the object goes.
#pragma once

#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "common/ids.h"

namespace lastcall::testing {

// A port the kernel just handed out on 127.0.0.1 (free unless someone else takes it first).
inline int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

inline bool Accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

// A child process started from argv; Kill() sends SIGKILL and reaps it.
class ChildProcess {
 public:
  ~ChildProcess() { Kill(); }
  bool Spawn(const std::vector<std::string>& argv, const std::string& log_path,
             const std::vector<std::pair<std::string, std::string>>& env = {}) {
    pid_ = ::fork();
    if (pid_ == 0) {
      for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
      FILE* log = std::fopen(log_path.c_str(), "a");
      if (log) {
        ::dup2(fileno(log), 1);
        ::dup2(fileno(log), 2);
      }
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execvp(args[0], args.data());
      std::_Exit(127);
    }
    return pid_ > 0;
  }
  void Kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  bool running() const { return pid_ > 0; }

 private:
  pid_t pid_ = -1;
};

// `nats-server -js` on a free port; its JetStream store in a temporary folder.
class NatsServer {
 public:
  NatsServer() {
    dir_ = std::filesystem::temp_directory_path() / ("lastcall-nats-" + RandomHex(6));
    std::filesystem::create_directories(dir_);
    port_ = FreePort();
  }
  ~NatsServer() {
    proc_.Kill();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  // Starts the server and waits until it accepts connections. False when it does not.
  bool Start() {
    if (!proc_.Spawn({"nats-server", "-js", "-a", "127.0.0.1", "-p", std::to_string(port_), "-sd",
                      (dir_ / "store").string()},
                     (dir_ / "server.log").string())) {
      return false;
    }
    for (int i = 0; i < 500; ++i) {
      if (Accepts(port_)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  // SIGKILL; with wipe, the JetStream store is deleted too (a server that lost its disk).
  void Kill(bool wipe) {
    proc_.Kill();
    if (wipe) {
      std::error_code ec;
      std::filesystem::remove_all(dir_ / "store", ec);
    }
  }
  std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }

 private:
  std::filesystem::path dir_;
  int port_ = 0;
  ChildProcess proc_;
};

}  // namespace lastcall::testing

namespace lastcall::testing {

// s3rver makes continuation tokens with DES, which Node 17+ (OpenSSL 3) only has in its legacy
// provider.
inline const std::vector<std::pair<std::string, std::string>> kS3rverEnv = {
    {"NODE_OPTIONS", "--openssl-legacy-provider"}};

// s3rver (npm, pinned in tests/integration/s3server) on a free port with one bucket, "test".
class S3Server {
 public:
  S3Server() {
    dir_ = std::filesystem::temp_directory_path() / ("lastcall-s3-" + RandomHex(6));
    std::filesystem::create_directories(dir_);
    port_ = FreePort();
  }
  ~S3Server() {
    proc_.Kill();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  bool Start() {
    std::string exe = std::string(LASTCALL_SOURCE_DIR) + "/tests/integration/s3server/node_modules/.bin/s3rver";
    if (!std::filesystem::exists(exe)) return false;
    if (!proc_.Spawn({exe, "-d", (dir_ / "data").string(), "-a", "127.0.0.1", "-p",
                      std::to_string(port_), "--silent", "--no-vhost-buckets", "--configure-bucket",
                      "test"},
                     (dir_ / "server.log").string(), kS3rverEnv)) {
      return false;
    }
    for (int i = 0; i < 1500; ++i) {
      if (Accepts(port_)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  int port() const { return port_; }

 private:
  std::filesystem::path dir_;
  int port_ = 0;
  ChildProcess proc_;
};

}  // namespace lastcall::testing
