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
  if (!BrotliEncoderCompress(BROTLI_DEFAULT_QUALITY, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_TEXT,
                             data.size(), reinterpret_cast<const uint8_t*>(data.data()), &size,
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
    accept_encoding =
        comma == std::string_view::npos ? std::string_view() : accept_encoding.substr(comma + 1);
    size_t semi = item.find(';');
    std::string_view name = item.substr(0, semi),
                     params = semi == std::string_view::npos ? "" : item.substr(semi);
    while (!name.empty() && name.front() == ' ') name.remove_prefix(1);
    while (!name.empty() && name.back() == ' ') name.remove_suffix(1);
    std::string lower = to_lower(std::string(name));
    bool refused = params.find("q=0") != std::string_view::npos &&
                   params.find_first_of("123456789") == std::string_view::npos;
    if (refused) continue;
    if (lower == "gzip" || lower == "deflate" || lower == "br") return lower;
  }
  return "";
}

struct StreamEncoder::State {
  bool brotli = false;
  z_stream z{};
  BrotliEncoderState* br = nullptr;
  ~State() {
    if (br)
      BrotliEncoderDestroyInstance(br);
    else
      deflateEnd(&z);
  }
  std::string zlib(std::string_view data, int flush) {
    std::string out;
    z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
    z.avail_in = static_cast<uInt>(data.size());
    char buf[16384];
    do {
      z.next_out = reinterpret_cast<Bytef*>(buf);
      z.avail_out = sizeof buf;
      deflate(&z, flush);
      out.append(buf, sizeof buf - z.avail_out);
    } while (z.avail_out == 0);
    return out;
  }
  std::string brotli_op(std::string_view data, BrotliEncoderOperation op) {
    std::string out;
    size_t avail_in = data.size();
    const auto* next_in = reinterpret_cast<const uint8_t*>(data.data());
    for (;;) {
      size_t avail_out = 0;
      if (!BrotliEncoderCompressStream(br, op, &avail_in, &next_in, &avail_out, nullptr, nullptr))
        throw std::runtime_error("StreamEncoder: brotli failed");
      size_t n = 0;
      const uint8_t* bytes = BrotliEncoderTakeOutput(br, &n);
      out.append(reinterpret_cast<const char*>(bytes), n);
      if (avail_in == 0 && !BrotliEncoderHasMoreOutput(br) &&
          (op != BROTLI_OPERATION_FINISH || BrotliEncoderIsFinished(br)))
        break;
    }
    return out;
  }
};

StreamEncoder::StreamEncoder(std::string_view coding) : s_(std::make_unique<State>()) {
  if (coding == "br") {
    s_->brotli = true;
    s_->br = BrotliEncoderCreateInstance(nullptr, nullptr, nullptr);
    if (!s_->br) throw std::runtime_error("StreamEncoder: brotli init failed");
    return;
  }
  int bits = coding == "gzip"          ? 15 + 16
             : coding == "deflate"     ? 15
             : coding == "deflate-raw" ? -15
                                       : 0;
  if (bits == 0)
    throw std::invalid_argument("StreamEncoder: unknown coding " + std::string(coding));
  if (deflateInit2(&s_->z, 6, Z_DEFLATED, bits, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw std::runtime_error("StreamEncoder: deflateInit2 failed");
}

StreamEncoder::~StreamEncoder() = default;

std::string StreamEncoder::push(std::string_view data) {
  return s_->brotli ? s_->brotli_op(data, BROTLI_OPERATION_FLUSH) : s_->zlib(data, Z_SYNC_FLUSH);
}

std::string StreamEncoder::finish() {
  return s_->brotli ? s_->brotli_op("", BROTLI_OPERATION_FINISH) : s_->zlib("", Z_FINISH);
}

}  // namespace keypool::testing
