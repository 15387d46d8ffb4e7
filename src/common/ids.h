// Identifiers that grant anything (coordination ids, file ids, secrets) come from a CSPRNG
// (OpenSSL RAND_bytes). Behind an interface so tests can make them predictable.
#pragma once

#include <string>

namespace lastcall {

class IdGenerator {
 public:
  virtual ~IdGenerator() = default;
  // A fresh RFC 4122 version-4 UUID in lower-case canonical form. Thread-safe.
  virtual std::string NewUuid() = 0;
  // A fresh version-7 UUID (RFC 9562): 48 bits of Unix milliseconds, then 74 CSPRNG bits, so ids
  // made later sort later. For ids that grant nothing by themselves (events, transaction rows):
  // their B-tree inserts land at the end instead of on random pages. Thread-safe.
  virtual std::string NewTimeOrderedUuid() = 0;
};

class RandomIdGenerator : public IdGenerator {
 public:
  std::string NewUuid() override;
  std::string NewTimeOrderedUuid() override;
};

// n random bytes from the CSPRNG, hex encoded (2n characters). Aborts if the CSPRNG fails:
// there is no safe fallback for missing entropy.
std::string RandomHex(size_t n);

// True when s is a canonical lower- or upper-case UUID (8-4-4-4-12 hex digits).
bool IsUuid(const std::string& s);

}  // namespace lastcall
