// Issue 16's two strategies for compressed answers, measured on the bodies LLM APIs send:
// (a) ask the upstream for identity: keypool decodes nothing, the upstream link carries the
//     plain bytes; (b) let the upstream compress and decode as the bytes pass (keypool's own
//     codec::Decoder, the code the proxy runs), plus re-encoding for a client that accepted
//     the coding if keypool were to forward what the client accepted.
// Prints bytes on the wire per body and CPU per body. Built and run by bench/compress.sh.
#include <brotli/encode.h>
#include <openssl/evp.h>
#include <time.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "codec/codec.h"

namespace {

// Words drawn with a Zipf-like skew: compresses like English prose (gzip about 3:1).
std::string prose(std::mt19937& rng, size_t n) {
  static const char* words[] = {
      "the",        "of",       "and",     "to",      "a",        "in",      "is",
      "that",       "for",      "it",      "as",      "with",     "model",   "answer",
      "request",    "token",    "key",     "pool",    "stream",   "latency", "upstream",
      "function",   "returns",  "value",   "because", "example",  "python",  "response",
      "compressed", "provider", "context", "window",  "embedding"};
  const size_t count = sizeof words / sizeof *words;
  std::string s;
  while (s.size() < n) {
    double u = std::uniform_real_distribution<double>(0, 1)(rng);
    s += words[std::min(count - 1, static_cast<size_t>(u * u * u * count))];
    s += ' ';
  }
  s.resize(n);
  return s;
}

std::string chat_json(std::mt19937& rng, size_t content) {
  return R"({"id":"chatcmpl-AbC123xYz","object":"chat.completion","created":1733625600,"model":"gpt-4o-2024-08-06",)"
         R"("choices":[{"index":0,"message":{"role":"assistant","content":")" +
         prose(rng, content) +
         R"(","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":812,)"
         R"("completion_tokens":)" +
         std::to_string(content / 4) +
         R"(,"total_tokens":1400},"system_fingerprint":"fp_7f6be3efb0"})";
}

// A streamed answer: one chat.completion.chunk per token.
std::string sse_stream(std::mt19937& rng, int events) {
  std::string s;
  for (int i = 0; i < events; ++i)
    s +=
        R"(data: {"id":"chatcmpl-AbC123xYz","object":"chat.completion.chunk","created":1733625600,)"
        R"("model":"gpt-4o-2024-08-06","system_fingerprint":"fp_7f6be3efb0","choices":[{"index":0,)"
        R"("delta":{"content":")" +
        prose(rng, 5) +
        R"("},"logprobs":null,"finish_reason":null}]})"
        "\n\n";
  return s + "data: [DONE]\n\n";
}

// text-embedding-3-small: 1536 floats per input, as OpenAI prints them.
std::string embeddings(std::mt19937& rng, size_t bytes) {
  std::string s = R"({"object":"list","data":[)";
  std::normal_distribution<double> g(0, 0.03);
  char num[32];
  for (int i = 0; s.size() < bytes; ++i) {
    s += R"({"object":"embedding","index":)" + std::to_string(i) + R"(,"embedding":[)";
    for (int d = 0; d < 1536; ++d) {
      std::snprintf(num, sizeof num, "%s%.9g", d ? "," : "", g(rng));
      s += num;
    }
    s += "]},";
  }
  s.back() = ']';
  return s + R"(,"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}})";
}

std::string gzip(const std::string& in, int level) {
  z_stream z{};
  deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&z, in.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  deflate(&z, Z_FINISH);
  out.resize(out.size() - z.avail_out);
  deflateEnd(&z);
  return out;
}

std::string brotli(const std::string& in, int quality) {
  size_t n = BrotliEncoderMaxCompressedSize(in.size()) + 64;
  std::string out(n, '\0');
  BrotliEncoderCompress(quality, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_TEXT, in.size(),
                        reinterpret_cast<const uint8_t*>(in.data()), &n,
                        reinterpret_cast<uint8_t*>(out.data()));
  out.resize(n);
  return out;
}

// Decodes as the proxy does: the coded body in 16 KiB reads, every piece pulled.
size_t decode(keypool::codec::Coding coding, const std::string& coded) {
  auto dec = keypool::codec::Decoder::make(coding);
  size_t out = 0;
  for (size_t off = 0; off < coded.size(); off += 16384) {
    dec->push(std::string_view(coded).substr(off, 16384));
    for (;;) {
      auto piece = dec->next();
      if (!piece || piece->empty()) break;
      out += piece->size();
    }
  }
  if (!dec->finish()) std::fprintf(stderr, "decode failed\n");
  return out;
}

// What reading the body off a TLS connection costs keypool per byte: AES-128-GCM decryption
// in 16 KiB records (the tag check, per record, is left out). Under strategy (a) it runs
// over the identity bytes, under (b) over the compressed ones.
size_t tls_decrypt(const std::string& wire) {
  static const unsigned char key[16] = {}, iv[12] = {};
  static EVP_CIPHER_CTX* ctx = [] {
    EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
    EVP_DecryptInit_ex(c, EVP_aes_128_gcm(), nullptr, key,
                       iv);  // the key schedule, once per connection
    return c;
  }();
  static std::string out(16384 + 32, '\0');
  size_t total = 0;
  for (size_t off = 0; off < wire.size(); off += 16384) {
    int n = static_cast<int>(std::min<size_t>(16384, wire.size() - off));
    EVP_DecryptInit_ex(ctx, nullptr, nullptr, nullptr, iv);  // a new nonce per record
    int len = 0;
    EVP_DecryptUpdate(ctx, reinterpret_cast<unsigned char*>(out.data()), &len,
                      reinterpret_cast<const unsigned char*>(wire.data() + off), n);
    total += static_cast<size_t>(len);
  }
  return total;
}

double thread_cpu_us() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

// CPU time of this thread per call (not wall time: the machine is shared), the least of 7
// runs of at least 30 ms each (interference only ever adds).
double us_per_call(const std::function<void()>& f) {
  double best = 1e18;
  for (int r = 0; r < 7; ++r) {
    int n = 0;
    double t0 = thread_cpu_us(), us = 0;
    do {
      f();
      ++n;
      us = thread_cpu_us() - t0;
    } while (us < 30000);
    best = std::min(best, us / n);
  }
  return best;
}

}  // namespace

int main() {
  using keypool::codec::Coding;
  std::mt19937 rng(16);
  struct Body {
    const char* name;
    std::string text;
  };
  std::vector<Body> bodies = {
      {"error 401 JSON",
       R"({"error":{"message":"Incorrect API key provided: sk-proj-****************abcd. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}})"},
      {"chat answer ~1 KB", chat_json(rng, 600)},
      {"chat answer ~4 KB", chat_json(rng, 3600)},
      {"SSE stream, 300 chunks", sse_stream(rng, 300)},
      {"embeddings ~1 MB", embeddings(rng, 1 << 20)},
  };
  std::printf(
      "Bytes on the upstream link per body (gzip level 6 and br quality 4: what edges use on the "
      "fly)\n\n");
  std::printf("| body | identity | gzip -6 | br q4 |\n|---|---:|---:|---:|\n");
  for (const auto& b : bodies) {
    auto g = gzip(b.text, 6), br = brotli(b.text, 4);
    std::printf("| %s | %zu | %zu (%.1fx) | %zu (%.1fx) |\n", b.name, b.text.size(), g.size(),
                double(b.text.size()) / g.size(), br.size(), double(b.text.size()) / br.size());
  }
  std::printf(
      "\nkeypool CPU per body, microseconds (thread CPU time, least of 7 runs). TLS: decrypting "
      "what\n"
      "the upstream link carries. (a) = TLS of the identity bytes; (b) = TLS of the gzip or br "
      "bytes +\n"
      "decoding them with codec::Decoder; re-encoding columns: what forwarding the coding the "
      "client\n"
      "accepted would add on top of (b).\n\n");
  std::printf(
      "| body | (a) identity: TLS | (b) gzip: TLS + gunzip | (b) br: TLS + decode | re-encode gzip "
      "-1 | re-encode br q4 |\n");
  std::printf("|---|---:|---:|---:|---:|---:|\n");
  for (const auto& b : bodies) {
    auto g = gzip(b.text, 6), br = brotli(b.text, 4);
    volatile size_t sink = 0;
    double tls_plain = us_per_call([&] { sink = sink + tls_decrypt(b.text); });
    double tls_g = us_per_call([&] { sink = sink + tls_decrypt(g); });
    double tls_br = us_per_call([&] { sink = sink + tls_decrypt(br); });
    double gun = us_per_call([&] { sink = sink + decode(Coding::Gzip, g); });
    double unbr = us_per_call([&] { sink = sink + decode(Coding::Brotli, br); });
    double regz = us_per_call([&] { sink = sink + gzip(b.text, 1).size(); });
    double rebr = us_per_call([&] { sink = sink + brotli(b.text, 4).size(); });
    std::printf("| %s | %.2f | %.2f + %.1f = %.1f | %.2f + %.1f = %.1f | %.1f | %.1f |\n", b.name,
                tls_plain, tls_g, gun, tls_g + gun, tls_br, unbr, tls_br + unbr, regz, rebr);
  }
  return 0;
}
