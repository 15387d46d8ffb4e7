// Errors as values. A Status says whether an operation succeeded and, when it did not, which
// class of failure it was (Code, mapped to an HTTP status at the edge), a stable machine-readable
// error code ("invalid_csv", stored in responses: do not rename existing ones) and a message for
// humans that names what and where.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace lastcall {

enum class Code {
  kOk,
  kInvalidArgument,   // 400: malformed id, JSON, form
  kUnauthenticated,   // 401
  kForbidden,         // 403: authenticated, but the route needs a role the caller lacks
  kNotFound,          // 404 (also: another user's object)
  kMethodNotAllowed,  // 405
  kConflict,          // 409
  kTooLarge,          // 413
  kUnsupported,       // 415: a format we cannot read
  kUnprocessable,     // 422: well-formed but wrong content (bad rows, unknown account)
  kUnavailable,       // 503: a dependency is down; retryable
  kInternal,          // 500: our own bug or an unexpected storage failure
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status Ok() { return Status(); }
  static Status Invalid(std::string error, std::string message) {
    return Status(Code::kInvalidArgument, std::move(error), std::move(message));
  }
  static Status Forbidden(std::string message) {
    return Status(Code::kForbidden, "forbidden", std::move(message));
  }
  static Status NotFound(std::string message) {
    return Status(Code::kNotFound, "not_found", std::move(message));
  }
  static Status Unauthenticated(std::string message) {
    return Status(Code::kUnauthenticated, "unauthorized", std::move(message));
  }
  static Status Conflict(std::string error, std::string message) {
    return Status(Code::kConflict, std::move(error), std::move(message));
  }
  static Status Unprocessable(std::string error, std::string message) {
    return Status(Code::kUnprocessable, std::move(error), std::move(message));
  }
  static Status Unsupported(std::string error, std::string message) {
    return Status(Code::kUnsupported, std::move(error), std::move(message));
  }
  static Status TooLarge(std::string message) {
    return Status(Code::kTooLarge, "payload_too_large", std::move(message));
  }
  static Status Unavailable(std::string message) {
    return Status(Code::kUnavailable, "unavailable", std::move(message));
  }
  static Status Internal(std::string message) {
    return Status(Code::kInternal, "internal", std::move(message));
  }

  Status(Code code, std::string error, std::string message)
      : code_(code), error_(std::move(error)), message_(std::move(message)) {}

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& error() const { return error_; }
  const std::string& message() const { return message_; }
  std::string ToString() const { return ok() ? "ok" : error_ + ": " + message_; }

 private:
  Code code_ = Code::kOk;
  std::string error_;
  std::string message_;
};

// A value or the Status that explains why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: must not be ok()

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }

 private:
  std::variant<T, Status> v_;
};

#define LASTCALL_RETURN_IF_ERROR(expr)   \
  do {                                   \
    ::lastcall::Status _st = (expr);     \
    if (!_st.ok()) return _st;           \
  } while (0)

}  // namespace lastcall
