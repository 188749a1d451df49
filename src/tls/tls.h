#pragma once
// TLS for upstream connections, with OpenSSL working on memory BIOs.
//
// The socket belongs to libuv; OpenSSL only sees bytes. The owner feeds what uv_read delivered
// into feed(), drains take_output() into uv_write after every call here, and keeps calling
// handshake() until it reports done. This room knows nothing of sockets, loops or HTTP.
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include "base/result.h"

// OpenSSL types, declared so that this header does not pull in <openssl/ssl.h>.
struct ssl_ctx_st;
struct ssl_st;
struct bio_st;

namespace keypool::tls {

// One SSL_CTX for upstream connections: TLS 1.2 or newer, peer verification against the
// system trust store plus an optional extra CA file, ALPN "http/1.1". Immutable once built,
// so sessions made from it on one thread need no lock.
class ClientContext {
 public:
  // extra_ca_file: PEM certificates to trust in addition to the system ones; empty for none.
  static Result<std::unique_ptr<ClientContext>> create(const std::string& extra_ca_file = "");
  ~ClientContext();
  ClientContext(const ClientContext&) = delete;
  ClientContext& operator=(const ClientContext&) = delete;

  ssl_ctx_st* native() const { return ctx_; }

 private:
  explicit ClientContext(ssl_ctx_st* ctx) : ctx_(ctx) {}
  ssl_ctx_st* ctx_;
};

enum class ReadStatus {
  Data,      // *n plaintext bytes were read
  WantMore,  // nothing buffered; feed more ciphertext
  Closed,    // the peer sent close_notify
};

// One client connection's TLS state: an SSL between two memory BIOs.
class ClientSession {
 public:
  // host is the name we dialled: SNI and certificate name check for a DNS name, an IP address
  // check for an IP literal ("[::1]" or "::1"). The context must outlive the session.
  static Result<std::unique_ptr<ClientSession>> create(const ClientContext& ctx, const std::string& host);
  ~ClientSession();
  ClientSession(const ClientSession&) = delete;
  ClientSession& operator=(const ClientSession&) = delete;

  // Ciphertext from the socket. Memory BIOs grow, so this always takes everything.
  void feed(const char* data, size_t len);
  // Ciphertext waiting to be sent; empties the buffer. Call after every other method.
  std::string take_output();
  bool has_output() const;

  // Advances the handshake: true once it is complete, false while it needs more input.
  // The error names the verification failure, e.g. "certificate verify failed: unable to
  // get local issuer certificate".
  Result<bool> handshake();
  bool handshake_done() const { return done_; }

  // Encrypts up to data.size() bytes; returns how many were taken (0 when OpenSSL waits for
  // input, e.g. a renegotiation). Partial writes and moving buffers are enabled, so a retry
  // may pass the remaining bytes from wherever they now live.
  Result<size_t> write(std::string_view data);
  // Decrypts into buf. An error means the connection is unusable.
  Result<ReadStatus> read(char* buf, size_t cap, size_t* n);

 private:
  ClientSession() = default;
  Error failure(const char* what, int ret);

  ssl_st* ssl_ = nullptr;
  bio_st* rbio_ = nullptr;  // owned by ssl_: ciphertext in
  bio_st* wbio_ = nullptr;  // owned by ssl_: ciphertext out
  bool done_ = false;
};

}  // namespace keypool::tls
