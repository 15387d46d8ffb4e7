#include "cli/receipt_cmd.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "receipts/receipts.h"

namespace lastcall {
namespace {

using json = nlohmann::json;

bool ReadAll(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

std::string Trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t\r\n") - a + 1);
}

}  // namespace

int VerifyReceiptCommand(const VerifyOptions& o, std::ostream& out, std::ostream& err) {
  std::string text;
  if (!ReadAll(o.receipt_file, &text)) {
    err << "lastcall receipt verify: cannot read " << o.receipt_file << "\n";
    return 2;
  }
  // Either the JWS itself or the service's JSON answer holding it.
  std::string jws = Trim(text);
  json wrapped = json::parse(jws, nullptr, false);
  if (wrapped.is_object() && wrapped.contains("receipt") && wrapped["receipt"].is_string()) {
    jws = wrapped["receipt"].get<std::string>();
  }
  json jwks;
  if (!o.jwks_file.empty()) {
    std::string keys;
    if (!ReadAll(o.jwks_file, &keys)) {
      err << "lastcall receipt verify: cannot read " << o.jwks_file << "\n";
      return 2;
    }
    jwks = json::parse(keys, nullptr, false);
    if (!jwks.is_object()) {
      err << "lastcall receipt verify: " << o.jwks_file << " is not a JWKS (JSON)\n";
      return 2;
    }
  } else if (!o.key_file.empty()) {
    std::string pem;
    if (!ReadAll(o.key_file, &pem)) {
      err << "lastcall receipt verify: cannot read " << o.key_file << "\n";
      return 2;
    }
    auto key = ReceiptKey::FromPem(pem);
    if (!key.ok()) {
      err << "lastcall receipt verify: " << o.key_file << ": " << key.status().message() << "\n";
      return 2;
    }
    jwks = {{"keys", json::array({key->PublicJwk()})}};
  } else {
    if (!std::filesystem::exists(std::filesystem::path(o.key_dir) / "signing.pem")) {
      err << "lastcall receipt verify: no key: give --jwks FILE or --key PEM (" << o.key_dir
          << " has no keys)\n";
      return 2;
    }
    bool created = false;
    auto ring = LoadReceiptKeys(o.key_dir, "", &created);
    if (!ring.ok()) {
      err << "lastcall receipt verify: " << ring.status().message() << "\n";
      return 2;
    }
    jwks = ring->Jwks();
  }
  auto claims = VerifyReceipt(jws, jwks);
  if (!claims.ok()) {
    err << "receipt NOT valid: " << claims.status().message() << "\n";
    return 1;
  }
  out << claims->dump(2) << "\n";
  err << "receipt valid\n";
  return 0;
}

int RotateReceiptKeyCommand(const std::string& key_dir, std::ostream& out, std::ostream& err) {
  auto kid = RotateReceiptKey(key_dir);
  if (!kid.ok()) {
    err << "lastcall receipt rotate-key: " << kid.status().message() << "\n";
    return 1;
  }
  out << *kid << "\n";
  return 0;
}

}  // namespace lastcall
