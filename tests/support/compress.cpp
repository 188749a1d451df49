#include "support/compress.h"

#include <brotli/encode.h>
#include <zlib.h>

#include <stdexcept>

#include "base/strings.h"

namespace keypool::testing {
namespace {

std::string deflate_with(std::string_view data, int window_bits) {
  z_stream z{};
  if (deflateInit2(&z, 6, Z_DEFLATED, window_bits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("compress: deflateInit2 failed");
  std::string out(deflateBound(&z, data.size()), '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  int rc = deflate(&z, Z_FINISH);
  out.resize(out.size() - z.avail_out);
  deflateEnd(&z);
  if (rc != Z_STREAM_END) throw std::runtime_error("compress: deflate did not finish");
  return out;
}

std::string brotli(std::string_view data) {
  std::string out(BrotliEncoderMaxCompressedSize(data.size()) + 16, '\0');
  size_t size = out.size();
  if (!BrotliEncoderCompress(BROTLI_DEFAULT_QUALITY, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_TEXT, data.size(),
                             reinterpret_cast<const uint8_t*>(data.data()), &size,
                             reinterpret_cast<uint8_t*>(out.data())))
    throw std::runtime_error("compress: brotli failed");
  out.resize(size);
  return out;
}

}  // namespace

std::string compress(std::string_view coding, std::string_view data) {
  if (coding == "gzip") return deflate_with(data, 15 + 16);
  if (coding == "deflate") return deflate_with(data, 15);
  if (coding == "deflate-raw") return deflate_with(data, -15);
  if (coding == "br") return brotli(data);
  throw std::invalid_argument("compress: unknown coding " + std::string(coding));
}

std::string pick_coding(std::string_view accept_encoding) {
  while (!accept_encoding.empty()) {
    size_t comma = accept_encoding.find(',');
    std::string_view item = accept_encoding.substr(0, comma);
    accept_encoding = comma == std::string_view::npos ? std::string_view() : accept_encoding.substr(comma + 1);
    size_t semi = item.find(';');
    std::string_view name = item.substr(0, semi), params = semi == std::string_view::npos ? "" : item.substr(semi);
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    std::string lower = to_lower(std::string(name));
    bool refused = params.find("q=0") != std::string_view::npos && params.find_first_of("123456789") == std::string_view::npos;
    if (refused) continue;
    if (lower == "gzip" || lower == "deflate" || lower == "br") return lower;
  }
  return "";
}

}  // namespace keypool::testing
