#include "tls/tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace keypool::tls {
namespace {

// The oldest error on this thread's OpenSSL queue, then clears the queue so that it cannot
// be blamed on the next connection served by this thread.
std::string openssl_error() {
  unsigned long e = ERR_get_error();
  std::string s;
  if (e != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    s = buf;
  }
  ERR_clear_error();
  return s.empty() ? "unknown error" : s;
}

// "[::1]" -> "::1"; URL authorities bracket IPv6 literals, certificates do not.
std::string strip_brackets(const std::string& host) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') return host.substr(1, host.size() - 2);
  return host;
}

bool is_ip_literal(const std::string& host) {
  unsigned char buf[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

Result<std::unique_ptr<ClientContext>> ClientContext::create(const std::string& extra_ca_file) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx) return make_error(ErrorCode::Internal, "SSL_CTX_new failed: " + openssl_error());
  std::unique_ptr<ClientContext> out(new ClientContext(ctx));

  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
    // A host without a system trust store can still work with an explicit CA file.
    ERR_clear_error();
  }
  if (!extra_ca_file.empty()) {
    // Check readability first: OpenSSL's own message for a missing file is cryptic.
    FILE* f = std::fopen(extra_ca_file.c_str(), "r");
    if (!f) {
      return make_error(ErrorCode::Invalid,
                        "cannot read CA file " + extra_ca_file + ": " + std::strerror(errno));
    }
    std::fclose(f);
    if (SSL_CTX_load_verify_locations(ctx, extra_ca_file.c_str(), nullptr) != 1) {
      return make_error(ErrorCode::Invalid,
                        "CA file " + extra_ca_file + " holds no usable PEM certificate: " + openssl_error());
    }
  }
  // Wire format: length-prefixed protocol names.
  static const unsigned char kAlpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_CTX_set_alpn_protos(ctx, kAlpn, sizeof(kAlpn));
  // Partial writes let a large plaintext be taken in pieces; a moving buffer lets the caller
  // retry from a different address (its queue may have been reallocated) after WANT_READ.
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  return out;
}

ClientContext::~ClientContext() { SSL_CTX_free(ctx_); }

Result<std::unique_ptr<ClientSession>> ClientSession::create(const ClientContext& ctx,
                                                             const std::string& host) {
  std::unique_ptr<ClientSession> s(new ClientSession());
  s->ssl_ = SSL_new(ctx.native());
  if (!s->ssl_) return make_error(ErrorCode::Internal, "SSL_new failed: " + openssl_error());
  s->rbio_ = BIO_new(BIO_s_mem());
  s->wbio_ = BIO_new(BIO_s_mem());
  if (!s->rbio_ || !s->wbio_) {
    BIO_free(s->rbio_);
    BIO_free(s->wbio_);
    s->rbio_ = s->wbio_ = nullptr;
    return make_error(ErrorCode::Internal, "BIO_new failed");
  }
  // An empty memory BIO must report "retry", not EOF, so SSL asks for more input.
  BIO_set_mem_eof_return(s->rbio_, -1);
  SSL_set_bio(s->ssl_, s->rbio_, s->wbio_);  // ssl_ now owns both
  SSL_set_connect_state(s->ssl_);

  const std::string name = strip_brackets(host);
  if (is_ip_literal(name)) {
    // RFC 6066 forbids IP literals in SNI; check the certificate's IP SANs instead.
    if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl_), name.c_str()) != 1)
      return make_error(ErrorCode::Internal, "cannot set IP verification for " + name);
  } else {
    SSL_set_hostflags(s->ssl_, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (SSL_set_tlsext_host_name(s->ssl_, name.c_str()) != 1 || SSL_set1_host(s->ssl_, name.c_str()) != 1)
      return make_error(ErrorCode::Internal, "cannot set TLS host name " + name + ": " + openssl_error());
  }
  return s;
}

ClientSession::~ClientSession() {
  if (ssl_) SSL_free(ssl_);
}

void ClientSession::feed(const char* data, size_t len) {
  if (len > 0) BIO_write(rbio_, data, static_cast<int>(len));
}

bool ClientSession::has_output() const { return BIO_ctrl_pending(wbio_) > 0; }

std::string ClientSession::take_output() {
  std::string out;
  size_t pending = BIO_ctrl_pending(wbio_);
  if (pending == 0) return out;
  out.resize(pending);
  int n = BIO_read(wbio_, out.data(), static_cast<int>(pending));
  out.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return out;
}

Error ClientSession::failure(const char* what, int ret) {
  int err = SSL_get_error(ssl_, ret);
  long verify = SSL_get_verify_result(ssl_);
  if (!done_ && verify != X509_V_OK) {
    ERR_clear_error();
    return make_error(ErrorCode::BadGateway,
                      std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify));
  }
  if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_SSL) {
    return make_error(ErrorCode::BadGateway, std::string(what) + " failed: " + openssl_error());
  }
  ERR_clear_error();
  return make_error(ErrorCode::BadGateway, std::string(what) + " failed (SSL error " + std::to_string(err) + ")");
}

Result<bool> ClientSession::handshake() {
  if (done_) return true;
  ERR_clear_error();
  int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    done_ = true;
    return true;
  }
  int err = SSL_get_error(ssl_, r);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return false;
  return failure("TLS handshake", r);
}

Result<size_t> ClientSession::write(std::string_view data) {
  if (data.empty()) return size_t{0};
  ERR_clear_error();
  size_t written = 0;
  int r = SSL_write_ex(ssl_, data.data(), data.size(), &written);
  if (r == 1) return written;
  int err = SSL_get_error(ssl_, r);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return size_t{0};
  return failure("TLS write", r);
}

Result<ReadStatus> ClientSession::read(char* buf, size_t cap, size_t* n) {
  *n = 0;
  ERR_clear_error();
  int r = SSL_read_ex(ssl_, buf, cap, n);
  if (r == 1) return ReadStatus::Data;
  int err = SSL_get_error(ssl_, r);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return ReadStatus::WantMore;
  if (err == SSL_ERROR_ZERO_RETURN) return ReadStatus::Closed;
  return failure("TLS read", r);
}

}  // namespace keypool::tls
