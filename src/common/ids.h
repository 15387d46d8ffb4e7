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
};

class RandomIdGenerator : public IdGenerator {
 public:
  std::string NewUuid() override;
};

// n random bytes from the CSPRNG, hex encoded (2n characters). Aborts if the CSPRNG fails:
// there is no safe fallback for missing entropy.
std::string RandomHex(size_t n);

// True when s is a canonical lower- or upper-case UUID (8-4-4-4-12 hex digits).
bool IsUuid(const std::string& s);

}  // namespace lastcall
