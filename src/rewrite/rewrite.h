#pragma once
// Rewrite: turns a routed downstream request into the request keypool sends upstream. Pure.
//
// It joins the service's base path with the client's rest and query, strips everything that
// belongs to the downstream hop or identifies the caller (hop-by-hop headers, Host, the team
// token in any header or query form, X-Keypool-* controls, Content-Length), and injects the
// pooled key exactly once, in the form the service's auth_scheme asks for. The key value
// appears only in the header or query parameter built here; nothing else in this room copies it.
//
// It does not frame the body: the proxy decides Content-Length vs chunked and passes that to
// serialize_head.
#include <cstdint>
#include <string>
#include <string_view>

#include "config/service.h"
#include "http/headers.h"

namespace keypool::rewrite {

struct UpstreamRequest {
  std::string method;
  std::string target;  // base_path + rest [+ '?' + query]
  http::Headers headers;
};

// `rest` starts with '/' (an empty rest means "/"); `query` is raw, without '?'.
// `upgrade`: a WebSocket handshake; keeps Upgrade and sends "Connection: Upgrade".
UpstreamRequest build(const config::ServiceDef& svc, std::string_view method, std::string_view rest,
                      std::string_view query, const http::Headers& client_headers,
                      std::string_view key_value, bool upgrade);

enum class BodyFraming { None, ContentLength, Chunked };

// "METHOD target HTTP/1.1\r\n", the headers, one framing header, "\r\n".
// A header whose name or value could split the head (CR, LF, NUL, other controls; ':' or
// space in a name) is left out rather than sent: it can only come from a bad stored key or
// service definition, and injecting it would let that value forge headers.
std::string serialize_head(const UpstreamRequest& r, BodyFraming framing, uint64_t content_length);

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
