#include "common/ids.h"
#include "common/request_id.h"

#include <openssl/rand.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>

namespace lastcall {
namespace {

void FillRandom(unsigned char* buf, size_t n) {
  if (RAND_bytes(buf, static_cast<int>(n)) != 1) {
    std::fprintf(stderr, "fatal: the CSPRNG (RAND_bytes) failed\n");
    std::abort();
  }
}

const char kHex[] = "0123456789abcdef";

std::string Format(const unsigned char* b) {
  std::string out;
  out.reserve(36);
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHex[b[i] >> 4]);
    out.push_back(kHex[b[i] & 0xf]);
  }
  return out;
}

}  // namespace

std::string RandomIdGenerator::NewUuid() {
  unsigned char b[16];
  FillRandom(b, sizeof b);
  b[6] = (b[6] & 0x0f) | 0x40;  // version 4
  b[8] = (b[8] & 0x3f) | 0x80;  // variant 10
  return Format(b);
}

// common/request_id.h: defined here to share the CSPRNG and the UUID formatting.
std::string NewRequestId() {
  thread_local std::mt19937_64 rng = [] {
    unsigned char seed[8];
    FillRandom(seed, sizeof seed);
    uint64_t v = 0;
    for (unsigned char c : seed) v = (v << 8) | c;
    return std::mt19937_64(v);
  }();
  unsigned char b[16];
  for (int half = 0; half < 2; ++half) {
    uint64_t v = rng();
    for (int i = 0; i < 8; ++i) b[half * 8 + i] = static_cast<unsigned char>(v >> (8 * i));
  }
  b[6] = (b[6] & 0x0f) | 0x40;  // version 4
  b[8] = (b[8] & 0x3f) | 0x80;  // variant 10
  return Format(b);
}

std::string RandomIdGenerator::NewTimeOrderedUuid() {
  unsigned char b[16];
  FillRandom(b, sizeof b);
  uint64_t ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
  for (int i = 0; i < 6; ++i) b[i] = static_cast<unsigned char>(ms >> (8 * (5 - i)));
  b[6] = (b[6] & 0x0f) | 0x70;  // version 7
  b[8] = (b[8] & 0x3f) | 0x80;  // variant 10
  return Format(b);
}

std::string RandomHex(size_t n) {
  std::string bytes(n, '\0');
  FillRandom(reinterpret_cast<unsigned char*>(bytes.data()), n);
  std::string out;
  out.reserve(2 * n);
  for (unsigned char c : bytes) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 0xf]);
  }
  return out;
}

bool IsUuid(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
      return false;
    }
  }
  return true;
}

}  // namespace lastcall
