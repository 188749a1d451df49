#pragma once
// Throwaway certificates for tests: a private CA and a server certificate it signed, made by
// the `openssl` command line so no test checks in key material.
#include <string>

namespace keypool::testing {

struct TestPki {
  std::string dir;
  std::string ca_cert;      // PEM, trust this (e.g. as extra_ca_file)
  std::string server_cert;  // PEM, valid for DNS:localhost, IP:127.0.0.1, IP:::1
  std::string server_key;   // PEM, EC P-256
};

// Creates dir if needed and the files in it, or reuses them when all are already there
// (tests in one run share them; a file lock keeps concurrent test processes from racing).
// Aborts the test process if openssl fails: without certificates no TLS test can run.
TestPki make_test_pki(const std::string& dir);

// Same, with the server certificate's subjectAltName given explicitly
// (e.g. "DNS:other.example") to test hostname verification failures.
TestPki make_test_pki(const std::string& dir, const std::string& subject_alt_names);

}  // namespace keypool::testing
