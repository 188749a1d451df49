#include "support/certs.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace keypool::testing {
namespace {

bool exists(const std::string& path) { return ::access(path.c_str(), R_OK) == 0; }

// The certificates live one day; a cached set older than half of that is made again so a
// long-lived /tmp never hands a test an expired certificate.
bool fresh(const std::string& path) {
  std::error_code ec;
  auto t = std::filesystem::last_write_time(path, ec);
  return !ec && std::filesystem::file_time_type::clock::now() - t < std::chrono::hours(12);
}

// Single quotes survive anything but a single quote, which test paths never contain.
std::string q(const std::string& s) { return "'" + s + "'"; }

void run(const std::string& cmd) {
  std::string full = cmd + " >/dev/null 2>&1";
  if (std::system(full.c_str()) != 0) {
    std::fprintf(stderr, "make_test_pki: command failed: %s\n", cmd.c_str());
    std::abort();
  }
}

void generate(const TestPki& p, const std::string& sans) {
  const std::string ca_key = p.dir + "/ca.key";
  const std::string csr = p.dir + "/server.csr";
  const std::string ext = p.dir + "/server.ext";
  const std::string tmp_cert = p.server_cert + ".tmp";
  run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out " + q(ca_key));
  run("openssl req -x509 -new -key " + q(ca_key) + " -sha256 -days 1 -subj '/CN=keypool test CA'" +
      " -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign" +
      " -out " + q(p.ca_cert));
  run("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out " + q(p.server_key));
  run("openssl req -new -key " + q(p.server_key) + " -subj '/CN=keypool test server' -out " + q(csr));
  {
    std::ofstream f(ext);
    f << "basicConstraints=CA:FALSE\n"
      << "keyUsage=critical,digitalSignature\n"
      << "extendedKeyUsage=serverAuth\n"
      << "subjectAltName=" << sans << "\n";
  }
  // The server certificate is written last and renamed into place, so its presence means
  // the whole set is complete.
  run("openssl x509 -req -in " + q(csr) + " -CA " + q(p.ca_cert) + " -CAkey " + q(ca_key) +
      " -set_serial " + std::to_string(1000 + (::getpid() % 100000)) + " -days 1 -sha256 -extfile " +
      q(ext) + " -out " + q(tmp_cert));
  std::filesystem::rename(tmp_cert, p.server_cert);
}

}  // namespace

TestPki make_test_pki(const std::string& dir, const std::string& subject_alt_names) {
  TestPki p;
  p.dir = dir;
  p.ca_cert = dir + "/ca.pem";
  p.server_cert = dir + "/server.pem";
  p.server_key = dir + "/server.key";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);

  // Test binaries may run in parallel (unit and integration); the lock makes one of them
  // generate while the others wait and then reuse.
  int lock = ::open((dir + "/.lock").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (lock >= 0) ::flock(lock, LOCK_EX);
  if (!(exists(p.ca_cert) && exists(p.server_key) && exists(p.server_cert) && fresh(p.server_cert))) generate(p, subject_alt_names);
  if (lock >= 0) ::close(lock);  // closing releases the flock
  return p;
}

TestPki make_test_pki(const std::string& dir) {
  return make_test_pki(dir, "DNS:localhost,IP:127.0.0.1,IP:::1");
}

}  // namespace keypool::testing
