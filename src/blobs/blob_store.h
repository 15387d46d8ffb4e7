// Content of uploaded files, keyed by server-made keys (never by user-supplied names). Writes are
// atomic: a reader sees all of an object or none of it.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/status.h"

namespace lastcall {

struct BlobEntry {
  std::string key;
  WallMillis modified_at = 0;  // when the object was last written (the store's clock)
};

class BlobStore {
 public:
  virtual ~BlobStore() = default;
  // Stores bytes under key durably (the call returns after the data is on disk). Overwrites.
  virtual Status Put(const std::string& key, std::string_view bytes) = 0;
  // The bytes under key; kNotFound when absent.
  virtual Result<std::string> Get(const std::string& key) = 0;
  // Removes key. Removing an absent key is ok (idempotent).
  virtual Status Delete(const std::string& key) = 0;
  // Every object present, with when it was written (for collecting orphans at start).
  virtual Result<std::vector<BlobEntry>> List() = 0;
};

// Keys are [a-f0-9-]{36} (UUIDs). Objects live in dir/<first two chars>/<key>; a write goes to a
// temporary file, is fsynced, renamed into place, and the folder is fsynced.
class FsBlobStore : public BlobStore {
 public:
  // Creates dir if needed and removes temporary files a crashed write left. One process owns the
  // folder. Errors: kUnavailable when it cannot.
  static Result<std::unique_ptr<FsBlobStore>> Open(const std::string& dir);
  Status Put(const std::string& key, std::string_view bytes) override;
  Result<std::string> Get(const std::string& key) override;
  Status Delete(const std::string& key) override;
  Result<std::vector<BlobEntry>> List() override;

 private:
  explicit FsBlobStore(std::string dir) : dir_(std::move(dir)) {}
  Result<std::string> PathFor(const std::string& key) const;
  std::string dir_;
};

}  // namespace lastcall
