// Small helpers shared by the benchmark driver: clocks, percentiles, /proc readers, machine facts.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace bench {

// Wall clock (system_clock) in microseconds and milliseconds since the epoch: the same clock the
// server stamps its rows with (milliseconds).
int64_t WallMicros();
int64_t WallMillis();
// Monotonic seconds since an arbitrary start.
double MonoSeconds();

// How the seeded files' transactions are spread over dates (--dates).
enum class DateShape {
  // As bank statements have them: each user's files are successive statements of one
  // transaction a day from 2019-01-01, so a file's rows are adjacent in its account's date order
  // and no two files of an account overlap.
  kStatement,
  // Every file spreads its rows over the same three months (2024-01 to 2024-03), so a file's
  // rows interleave with those of all its account's other files (the only shape before
  // 2026-11-29).
  kScattered,
};
const char* DateShapeName(DateShape shape);
// The date (YYYY-MM-DD) of row `row` of the seeded file `file_index`, which belongs to user
// file_index % users and has rows_per_file rows.
std::string SeedDate(DateShape shape, int file_index, int users, int rows_per_file, int row);

// Percentiles by nearest rank over a copy of values (p in [0, 100]); 0 when empty.
struct Percentiles {
  double p50 = 0, p90 = 0, p99 = 0, max = 0, mean = 0;
  size_t count = 0;
};
Percentiles Summarize(std::vector<double> values);

// From /proc/<pid>/status: VmRSS and VmHWM in KiB (0 when unreadable).
struct ProcMemory {
  int64_t rss_kib = 0;
  int64_t hwm_kib = 0;
};
ProcMemory ReadProcMemory(pid_t pid);
// utime + stime of a process from /proc/<pid>/stat, in seconds.
double ProcCpuSeconds(pid_t pid);
// From /proc/<pid>/io: bytes passed to write-like and read-like syscalls, their counts, and the
// bytes the process caused to be written to storage.
struct ProcIo {
  int64_t rchar = 0, wchar = 0, syscr = 0, syscw = 0, write_bytes = 0;
};
ProcIo ReadProcIo(pid_t pid);
// Per thread of a process (ascending thread id, i.e. roughly start order): CPU seconds so far.
std::vector<std::pair<pid_t, double>> ThreadCpuSeconds(pid_t pid);
// CPU seconds (user + system) this process used so far, all threads.
double SelfCpuSeconds();

struct MachineInfo {
  int nproc = 0;
  std::string cpu_model;
  int64_t mem_total_mib = 0;
  std::string kernel;
  std::string loadavg;
};
MachineInfo ReadMachineInfo();
std::string ReadLoadAvg();
// The file system type under path ("ext4", "tmpfs", ...).
std::string FileSystemType(const std::string& path);

std::string ReadFileOr(const std::string& path, const std::string& fallback);
bool WriteFileAtomically(const std::string& path, const std::string& content);

// Prints a progress line to stderr with the elapsed time.
void Note(const std::string& line);

}  // namespace bench
