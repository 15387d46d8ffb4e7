#include "bench_util.h"

#include <sys/resource.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>

namespace bench {

int64_t WallMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int64_t WallMillis() { return WallMicros() / 1000; }

double MonoSeconds() {
  static const auto start = std::chrono::steady_clock::now();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

Percentiles Summarize(std::vector<double> v) {
  Percentiles p;
  p.count = v.size();
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto rank = [&](double q) {
    size_t k = static_cast<size_t>(std::ceil(q / 100.0 * static_cast<double>(v.size())));
    if (k == 0) k = 1;
    return v[std::min(k, v.size()) - 1];
  };
  p.p50 = rank(50);
  p.p90 = rank(90);
  p.p99 = rank(99);
  p.max = v.back();
  p.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  return p;
}

ProcMemory ReadProcMemory(pid_t pid) {
  ProcMemory m;
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    long long v = 0;
    if (std::sscanf(line.c_str(), "VmRSS: %lld kB", &v) == 1) m.rss_kib = v;
    if (std::sscanf(line.c_str(), "VmHWM: %lld kB", &v) == 1) m.hwm_kib = v;
  }
  return m;
}

namespace {

double StatCpuSeconds(const std::string& stat_path) {
  std::ifstream in(stat_path);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t close = all.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream rest(all.substr(close + 2));
  std::string field;
  // Fields after the command: state(3) ... utime is field 14, stime 15 (1-based overall).
  std::vector<std::string> f;
  while (rest >> field) f.push_back(field);
  if (f.size() < 13) return 0;
  double ticks = std::stod(f[11]) + std::stod(f[12]);
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

}  // namespace

ProcIo ReadProcIo(pid_t pid) {
  ProcIo io;
  std::ifstream in("/proc/" + std::to_string(pid) + "/io");
  std::string key;
  long long v = 0;
  while (in >> key >> v) {
    if (key == "rchar:") io.rchar = v;
    if (key == "wchar:") io.wchar = v;
    if (key == "syscr:") io.syscr = v;
    if (key == "syscw:") io.syscw = v;
    if (key == "write_bytes:") io.write_bytes = v;
  }
  return io;
}

double ProcCpuSeconds(pid_t pid) { return StatCpuSeconds("/proc/" + std::to_string(pid) + "/stat"); }

std::vector<std::pair<pid_t, double>> ThreadCpuSeconds(pid_t pid) {
  std::vector<std::pair<pid_t, double>> out;
  std::error_code ec;
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    pid_t tid = static_cast<pid_t>(std::stol(e.path().filename().string()));
    out.emplace_back(tid, StatCpuSeconds(e.path().string() + "/stat"));
  }
  std::sort(out.begin(), out.end());
  return out;
}

double SelfCpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

std::string ReadFileOr(const std::string& path, const std::string& fallback) {
  std::ifstream in(path);
  if (!in) return fallback;
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string ReadLoadAvg() {
  std::string s = ReadFileOr("/proc/loadavg", "");
  std::istringstream in(s);
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

MachineInfo ReadMachineInfo() {
  MachineInfo m;
  m.nproc = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  std::ifstream cpu("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpu, line)) {
    if (line.rfind("model name", 0) == 0) {
      size_t colon = line.find(':');
      if (colon != std::string::npos) m.cpu_model = line.substr(colon + 2);
      break;
    }
  }
  std::ifstream mem("/proc/meminfo");
  while (std::getline(mem, line)) {
    long long kb = 0;
    if (std::sscanf(line.c_str(), "MemTotal: %lld kB", &kb) == 1) m.mem_total_mib = kb / 1024;
  }
  utsname u{};
  if (uname(&u) == 0) m.kernel = std::string(u.sysname) + " " + u.release;
  m.loadavg = ReadLoadAvg();
  return m;
}

std::string FileSystemType(const std::string& path) {
  struct statfs s {};
  if (statfs(path.c_str(), &s) != 0) return "unknown";
  switch (static_cast<unsigned long>(s.f_type)) {
    case 0xEF53: return "ext4";
    case 0x01021994: return "tmpfs";
    case 0x9123683E: return "btrfs";
    case 0x58465342: return "xfs";
    case 0x794c7630: return "overlayfs";
    default: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "0x%lx", static_cast<unsigned long>(s.f_type));
      return buf;
    }
  }
}

bool WriteFileAtomically(const std::string& path, const std::string& content) {
  std::error_code ec;
  auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return false;
    out << content;
    if (!out) return false;
  }
  std::filesystem::rename(tmp, path, ec);
  return !ec;
}

void Note(const std::string& line) {
  std::fprintf(stderr, "[bench %7.1fs] %s\n", MonoSeconds(), line.c_str());
  std::fflush(stderr);
}

const char* DateShapeName(DateShape shape) {
  return shape == DateShape::kStatement ? "statement" : "scattered";
}

std::string SeedDate(DateShape shape, int file_index, int users, int rows_per_file, int row) {
  char out[16];
  if (shape == DateShape::kScattered) {
    std::snprintf(out, sizeof out, "2024-%02d-%02d", 1 + (file_index + row) % 3,
                  1 + (row * 3 + file_index) % 28);
    return out;
  }
  using namespace std::chrono;
  int statement = file_index / std::max(1, users);  // the user's n-th file
  year_month_day d{sys_days{year{2019} / January / 1} + days{statement * rows_per_file + row}};
  std::snprintf(out, sizeof out, "%04d-%02u-%02u", static_cast<int>(d.year()),
                static_cast<unsigned>(d.month()), static_cast<unsigned>(d.day()));
  return out;
}

}  // namespace bench
