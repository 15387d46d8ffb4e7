// ParseOfx (src/import/ofx_reader.cc): our scan of the raw bytes plus libofx, on arbitrary bytes.
// Properties: see CheckStatement (rows in order, real dates, exact amounts in range, UTF-8 text,
// only the documented errors); and the temporary file the reader hands to libofx is gone after
// every call, whatever the input.
#include <dirent.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "import/statement.h"
#include "statement_checks.h"

namespace {

// The reader's temporary files live in $TMPDIR; the target gives it a private one.
std::string PrivateTmpDir() {
  static const std::string dir = [] {
    char tmpl[] = "/tmp/lastcall-fuzz-ofx-XXXXXX";
    const char* made = mkdtemp(tmpl);
    if (made == nullptr) std::abort();
    setenv("TMPDIR", made, 1);
    return std::string(made);
  }();
  return dir;
}

int CountEntries(const std::string& dir) {
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") ++n;
  }
  closedir(d);
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string dir = PrivateTmpDir();
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto r = lastcall::ParseOfx(bytes);
  lastcall::fuzz::CheckStatement(r, "invalid_ofx");
  FUZZ_CHECK(CountEntries(dir) == 0, "a temporary file was left in " + dir);
  (void)lastcall::DetectFormat("statement.ofx", "application/x-ofx", bytes);
  return 0;
}
