#include <brotli/decode.h>
#include <zlib.h>

#include <array>
#include <limits>

#include "codec/codec.h"

namespace keypool::codec {
namespace {

// zlib for gzip and deflate. A gzip body may be several members one after another (what
// `cat a.gz b.gz` makes): each is read in turn. A deflate body is zlib-wrapped when its
// first two bytes are a zlib header, else raw deflate; the first byte is held until the
// second one comes, whatever way the body is cut.
class ZlibDecoder final : public Decoder {
 public:
  ZlibDecoder(Coding coding, Limits limits)
      : Decoder(limits, coding == Coding::Gzip ? "gzip" : "deflate"),
        gzip_(coding == Coding::Gzip) {
    if (gzip_) open(15 + 16);  // 32 KiB window, gzip wrapper
  }
  ~ZlibDecoder() override {
    if (open_) inflateEnd(&z_);
  }

 private:
  void open(int window_bits) {
    // zlib's own allocator: inflate's state is one 7 KiB block plus its window, made once.
    open_ = inflateInit2(&z_, window_bits) == Z_OK;
  }

  Result<Step> step() override {
    if (!open_ && !gzip_) return sniff();
    if (!open_)
      return make_error(ErrorCode::Internal, "gzip: zlib could not start (out of memory)");
    if (ended_) {
      if (in_.empty()) return Step{};  // nothing after the end (yet)
      if (!gzip_)
        return make_error(ErrorCode::BadGateway, "deflate: bytes after the end of the stream");
      // Another member follows.
      if (inflateReset(&z_) != Z_OK)
        return make_error(ErrorCode::Internal, "gzip: zlib reset failed");
      ended_ = false;
      return Step{0, true};
    }
    return inflate_some();
  }

  // Deflate's first two bytes: a zlib header (RFC 1950: CM 8, CINFO at most 7, the pair a
  // multiple of 31) or the start of a raw stream.
  Result<Step> sniff() {
    bool took = false;
    while (held_size_ < 2 && !in_.empty()) {
      held_[held_size_++] = static_cast<unsigned char>(in_.front());
      in_.remove_prefix(1);
      took = true;
    }
    if (held_size_ < 2) return Step{0, took};
    unsigned cmf = held_[0], flg = held_[1];
    bool zlib_wrapped = (cmf & 0x0f) == 8 && (cmf >> 4) <= 7 && ((cmf << 8) | flg) % 31 == 0;
    open(zlib_wrapped ? 15 : -15);
    if (!open_)
      return make_error(ErrorCode::Internal, "deflate: zlib could not start (out of memory)");
    held_off_ = 0;
    return inflate_some();  // at once: a 2-byte raw stream ("\x03\x00", empty) is whole
  }

  Result<Step> inflate_some() {
    // The held header bytes go in before anything else.
    bool from_held = held_off_ < held_size_;
    std::string_view src =
        from_held ? std::string_view(reinterpret_cast<const char*>(held_.data()) + held_off_,
                                     held_size_ - held_off_)
                  : in_;
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(src.data()));
    z_.avail_in = static_cast<uInt>(std::min<size_t>(src.size(), std::numeric_limits<uInt>::max()));
    z_.next_out = reinterpret_cast<Bytef*>(out_.data());
    z_.avail_out = static_cast<uInt>(out_.size());
    int rc = inflate(&z_, Z_NO_FLUSH);
    size_t used = src.size() - z_.avail_in;  // avail_in only shrinks from what was given
    if (from_held)
      held_off_ += used;
    else
      in_.remove_prefix(used);
    size_t produced = out_.size() - z_.avail_out;
    switch (rc) {
      case Z_STREAM_END:
        ended_ = true;
        [[fallthrough]];
      case Z_OK:
        return Step{produced, used > 0 || produced > 0 || rc == Z_STREAM_END};
      case Z_BUF_ERROR:  // no room or no input: nothing to do until more comes
        return Step{produced, used > 0 || produced > 0};
      case Z_MEM_ERROR:
        return make_error(ErrorCode::Internal,
                          std::string(gzip_ ? "gzip" : "deflate") + ": out of memory");
      default:  // Z_DATA_ERROR, Z_NEED_DICT, Z_STREAM_ERROR
        return make_error(ErrorCode::BadGateway,
                          std::string(gzip_ ? "gzip" : "deflate") + ": corrupt data (" +
                              (z_.msg ? z_.msg : "zlib error " + std::to_string(rc)) + ")");
    }
  }

  z_stream z_{};
  bool gzip_;
  bool open_ = false;
  std::array<unsigned char, 2> held_{};  // deflate: the first two bytes, read before inflating
  size_t held_size_ = 0, held_off_ = 0;
};

class BrotliDecoder final : public Decoder {
 public:
  explicit BrotliDecoder(Limits limits)
      : Decoder(limits, "br"), state_(BrotliDecoderCreateInstance(nullptr, nullptr, nullptr)) {}

 private:
  struct Destroy {
    void operator()(BrotliDecoderState* s) const { BrotliDecoderDestroyInstance(s); }
  };

  Result<Step> step() override {
    if (!state_) return make_error(ErrorCode::Internal, "br: could not start (out of memory)");
    if (ended_) {
      if (in_.empty()) return Step{};
      return make_error(ErrorCode::BadGateway, "br: bytes after the end of the stream");
    }
    size_t avail_in = in_.size();
    const auto* next_in = reinterpret_cast<const uint8_t*>(in_.data());
    size_t avail_out = out_.size();
    auto* next_out = reinterpret_cast<uint8_t*>(out_.data());
    auto rc = BrotliDecoderDecompressStream(state_.get(), &avail_in, &next_in, &avail_out,
                                            &next_out, nullptr);
    size_t used = in_.size() - avail_in;
    in_.remove_prefix(used);
    size_t produced = out_.size() - avail_out;
    switch (rc) {
      case BROTLI_DECODER_RESULT_SUCCESS:
        ended_ = true;
        return Step{produced, true};
      case BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT:
      case BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT:
        return Step{produced, used > 0 || produced > 0};
      case BROTLI_DECODER_RESULT_ERROR:
      default:
        return make_error(ErrorCode::BadGateway,
                          std::string("br: corrupt data (") +
                              BrotliDecoderErrorString(BrotliDecoderGetErrorCode(state_.get())) +
                              ")");
    }
  }

  std::unique_ptr<BrotliDecoderState, Destroy> state_;
};

}  // namespace

std::unique_ptr<Decoder> Decoder::make(Coding coding, Limits limits) {
  switch (coding) {
    case Coding::Gzip:
    case Coding::Deflate:
      return std::make_unique<ZlibDecoder>(coding, limits);
    case Coding::Brotli:
      return std::make_unique<BrotliDecoder>(limits);
    case Coding::Identity:
    case Coding::Other:
      return nullptr;
  }
  return nullptr;
}

Decoder::Decoder(Limits limits, const char* label)
    : out_(std::max<size_t>(limits.piece_bytes, 1), '\0'), limits_(limits), label_(label) {}

void Decoder::push(std::string_view in) {
  if (!holding_) {
    in_ = in;
    return;
  }
  kept_.erase(0, kept_.size() - in_.size());  // drop what was read
  kept_.append(in);
  in_ = kept_;
}

void Decoder::hold() {
  if (holding_ || in_.empty()) return;
  kept_.assign(in_);
  in_ = kept_;
  holding_ = true;
}

Error Decoder::fail(Error error) {
  in_ = {};
  holding_ = false;
  std::string().swap(kept_);
  error_ = std::move(error);
  return *error_;
}

Result<std::string_view> Decoder::next() {
  if (error_) return *error_;
  // Steps until one writes output, or until the input is used up and the coder holds
  // nothing more: a step that fills out_ may leave output behind, so one more follows it
  // even without input.
  while (!in_.empty() || pending_) {
    size_t before = in_.size();
    auto s = step();
    if (!s) return fail(s.error());
    bytes_in_ += before - in_.size();
    pending_ = s->produced == out_.size();
    if (s->produced > 0) {
      bytes_out_ += s->produced;
      if (bytes_out_ > bytes_in_ * limits_.max_ratio + limits_.allowance)
        return fail(make_error(ErrorCode::BadGateway,
                               std::string(label_) + " body expands past " +
                                   std::to_string(limits_.max_ratio) +
                                   " times its size: refused as a decompression bomb"));
      return std::string_view(out_.data(), s->produced);
    }
    if (!s->moved) break;  // nothing more until more input comes
  }
  pending_ = false;
  if (holding_ && in_.empty()) {
    holding_ = false;
    std::string().swap(kept_);
  }
  return std::string_view();
}

Result<void> Decoder::finish() {
  if (error_) return *error_;
  if (!ended_)
    return fail(make_error(
        ErrorCode::BadGateway,
        std::string(label_) + " body ends before its compressed stream does (truncated)"));
  return Ok{};
}

}  // namespace keypool::codec
