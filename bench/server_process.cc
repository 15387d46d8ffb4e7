#include "server_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "http_load.h"

extern char** environ;

namespace bench {

unsigned short FreeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  unsigned short port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    socklen_t len = sizeof a;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

bool ServerProcess::Start(const std::string& binary, const std::map<std::string, std::string>& env,
                          const std::string& log_path, double timeout_s, std::string* error) {
  for (int attempt = 0; attempt < 3; ++attempt) {
    port_ = FreeLoopbackPort();
    std::map<std::string, std::string> vars;
    for (char** e = environ; *e; ++e) {
      std::string kv = *e;
      size_t eq = kv.find('=');
      if (eq == std::string::npos) continue;
      std::string k = kv.substr(0, eq);
      if (k.rfind("LASTCALL_", 0) == 0 || k == "ENABLE_EVENT_PUBLISHING" ||
          k == "COORDINATION_TIMEOUT_MINUTES" || k == "EXPECTED_CONSUMERS") {
        continue;
      }
      vars[k] = kv.substr(eq + 1);
    }
    for (const auto& [k, v] : env) vars[k] = v;
    vars["LASTCALL_LISTEN"] = "127.0.0.1:" + std::to_string(port_);
    std::vector<std::string> envs;
    for (const auto& [k, v] : vars) envs.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (auto& s : envs) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string arg0 = binary, arg1 = "serve";
    char* argv[] = {arg0.data(), arg1.data(), nullptr};

    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
      *error = std::string("fork: ") + std::strerror(errno);
      return false;
    }
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(127);
      int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        ::close(fd);
      }
      ::execve(binary.c_str(), argv, envp.data());
      ::_exit(127);
    }
    pid_ = pid;
    double start = MonoSeconds();
    while (MonoSeconds() - start < timeout_s) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        *error = "the server exited during start-up (status " + std::to_string(status) + "); see " +
                 log_path;
        break;
      }
      HttpResult r = HttpOnce("127.0.0.1", port_, {"GET", "/healthz", "", "", ""}, 1.0);
      if (r.status == 200) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    if (pid_ > 0) {
      Stop(5.0);
      *error = "the server did not answer /healthz within " + std::to_string(timeout_s) + " s";
      return false;
    }
  }
  return false;
}

bool ServerProcess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

int ServerProcess::Stop(double timeout_s) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  double start = MonoSeconds();
  int status = 0;
  while (MonoSeconds() - start < timeout_s) {
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return status;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

ServerProcess::~ServerProcess() { Stop(5.0); }

}  // namespace bench
