// BlobStore on any S3-compatible object store (AWS S3, MinIO, Ceph RGW, s3rver, ...), shared by
// every node. Objects live at <prefix><key> in one bucket, addressed path-style
// (<endpoint>/<bucket>/<object>), signed with AWS Signature Version 4. HTTP/1.1 over Boost.Beast
// (http:// endpoints) with a small pool of keep-alive connections; each exchange has a timeout,
// and network errors, 5xx and 429 answers are retried with backoff (every operation here is
// idempotent). An S3 PUT is atomic: a reader sees all of an object or none of it.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "blobs/blob_store.h"
#include "blobs/s3/sigv4.h"

namespace lastcall {

struct S3Options {
  std::string bucket;
  std::string host;             // endpoint host
  std::string port = "80";      // endpoint port
  std::string region = "us-east-1";
  std::string prefix = "blobs/";  // object names are prefix + key
  sigv4::Credentials credentials;
  int64_t timeout_ms = 15000;   // one HTTP exchange (connect, write, read)
  int max_attempts = 4;         // per operation; backoff 100 ms doubling between them
  size_t max_idle_connections = 8;
  int list_page_size = 1000;    // max-keys of one ListObjectsV2 page
};

// Parses s3://bucket?endpoint=http://host:port&region=...&prefix=... Errors: kInvalidArgument
// "invalid_config" naming what is wrong (https endpoints are refused: not supported yet).
Result<S3Options> ParseS3Url(const std::string& url);

class S3BlobStore : public BlobStore {
 public:
  // Checks that the bucket answers with these credentials (one ListObjectsV2 of one key).
  // Errors: kUnavailable when it does not (the S3 error code is in the message).
  static Result<std::unique_ptr<S3BlobStore>> Open(S3Options options);
  ~S3BlobStore() override;

  Status Put(const std::string& key, std::string_view bytes) override;
  Result<std::string> Get(const std::string& key) override;
  Status Delete(const std::string& key) override;
  // Every object under the prefix (ListObjectsV2, following continuation tokens), with its
  // LastModified.
  Result<std::vector<BlobEntry>> List() override;

  struct Response {
    int status = 0;
    std::string body;
  };
  // One signed request, retried as described above. Thread-safe. query holds raw names/values.
  Result<Response> Send(const std::string& method, const std::string& object,
                        const std::vector<std::pair<std::string, std::string>>& query,
                        std::string_view body);

 private:
  struct Connection;
  explicit S3BlobStore(S3Options options);
  Result<Response> SendOnce(Connection& c, const std::string& method, const std::string& target,
                            const sigv4::Request& signed_request, std::string_view body,
                            bool* reusable);
  std::unique_ptr<Connection> Take();
  void Give(std::unique_ptr<Connection> c);
  std::string ObjectPath(const std::string& object) const;

  S3Options options_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Connection>> idle_;  // guarded by mu_
};

}  // namespace lastcall
