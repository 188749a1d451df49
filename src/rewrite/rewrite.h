#pragma once
// Rewrite: turns a routed downstream request into the request keypool sends upstream. Pure.
//
// It joins the service's base path with the client's rest and query, strips everything that
// belongs to the downstream hop or identifies the caller (hop-by-hop headers, Host, the team
// token in any header or query form, X-Keypool-* controls, Content-Length), asks for an
// uncompressed answer (Accept-Encoding: identity: keypool reads it), and injects the
// pooled key exactly once, in the form the service's auth_scheme asks for. The key value
// appears only in the header or query parameter built here; nothing else in this room copies it.
//
// The head is written straight into one string, reserved once: client headers, fixed service
// headers and the key are appended from where they already live, never copied elsewhere first.
#include <cstdint>
#include <string>
#include <string_view>

#include "config/service.h"
#include "http/headers.h"

namespace keypool::rewrite {

// How the proxy frames the body it streams upstream (it decides; rewrite only writes it down).
enum class BodyFraming { None, ContentLength, Chunked };

// A routed downstream request, as views into the client's head and route.
struct ClientRequest {
  std::string_view method;
  std::string_view rest;   // starts with '/'; an empty rest means "/"
  std::string_view query;  // raw, without '?'
  const http::Headers& headers;
  bool upgrade = false;  // a WebSocket handshake: keeps Upgrade, sends "Connection: Upgrade"
  BodyFraming framing = BodyFraming::None;
  uint64_t content_length = 0;  // with BodyFraming::ContentLength
};

// "METHOD target HTTP/1.1\r\n", the headers, one framing header, "\r\n"; target is
// base_path + rest [+ '?' + query].
//
// The key is written into the returned string and nowhere else, and that string is reserved
// up front for the largest head these inputs can give, so it never reallocates (which would
// free a copy of the key unwiped). The caller must wipe it after use: upstream::Connection
// wipes every buffer it writes. `req.headers` are only read, so they can serve a retry.
//
// A header whose name or value could split the head (CR, LF, NUL, other controls; a name
// that is not a token) is left out rather than sent: it can only come from a bad stored key
// or service definition, and injecting it would let that value forge headers.
std::string upstream_head(const config::ServiceDef& svc, const ClientRequest& req,
                          std::string_view key_value);
// The same, written over `head` (its contents are replaced, its capacity used when large
// enough), for a caller that reuses one buffer from request to request. What `head` held
// must not be a secret: growing it frees the old storage unwiped.
void upstream_head_into(std::string& head, const config::ServiceDef& svc, const ClientRequest& req,
                        std::string_view key_value);

// Replaces each occurrence of `secret`, and of its percent-encoded forms (upper- and
// lower-case hex), with "***". Returns how many were replaced. For buffered error bodies:
// a streamed body split across chunks could hide an occurrence straddling the boundary.
size_t mask_secret(std::string& text, std::string_view secret);
// Stronger, for upstream error bodies: also masks any run of 6+ characters of the secret and
// its last 4 characters where an upstream shows them after a mask ("sk-****abcd").
size_t mask_fragments(std::string& text, std::string_view secret);

// RFC 3986 percent-encoding of everything but unreserved characters (upper-case hex).
std::string percent_encode(std::string_view s);

// The Host header value for the service: host, [v6] in brackets, ":port" unless default.
std::string host_header(const config::ServiceDef& svc);

}  // namespace keypool::rewrite
