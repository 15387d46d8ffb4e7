// `lastcall receipt verify|rotate-key`: check a deletion receipt offline, and rotate the signing key.
#pragma once

#include <ostream>
#include <string>

namespace lastcall {

struct VerifyOptions {
  std::string receipt_file;  // the compact JWS, or the JSON of GET /coordinations/{id}/receipt
  std::string jwks_file;     // a saved /.well-known/jwks.json
  std::string key_file;      // or a PEM key (public or private)
  std::string key_dir;       // else: the data folder's receipt keys (signing and retired)
};

// Exit codes: 0 the receipt verifies (its claims are printed as JSON), 1 it does not (the reason
// on err), 2 usage (unreadable file or key set).
int VerifyReceiptCommand(const VerifyOptions& options, std::ostream& out, std::ostream& err);

// Retires the key folder's signing key and makes a new one (restart the service to sign with it).
// Exit codes: 0 done (the new kid printed), 1 failure.
int RotateReceiptKeyCommand(const std::string& key_dir, std::ostream& out, std::ostream& err);

}  // namespace lastcall
