#pragma once
// UsageTap: reads token usage out of a response as it streams past, without holding it
// and without delaying it. Pure: fed the body bytes, asked for the result at the end (or
// when the client abandons the stream: what passed is still counted).
//
// Understands: OpenAI-compatible JSON bodies (`usage.prompt_tokens/completion_tokens`, or
// `input_tokens/output_tokens`), OpenAI-compatible SSE (`data: {...}` chunks; the usage
// is in the final chunk when the client asked for it), and Anthropic SSE (`message_start`
// carries `message.usage.input_tokens`, `message_delta` carries `usage.output_tokens`;
// merged). Memory is bounded: a JSON body over max_json_bytes, or an SSE event over
// max_event_bytes, is skipped.
#include <cstdint>
#include <string>
#include <string_view>

namespace keypool::proxy {

struct Usage {
  int64_t input_tokens = 0;
  int64_t output_tokens = 0;
  bool found = false;
};

class UsageTap {
 public:
  // content_type: the response's Content-Type ("application/json", "text/event-stream").
  explicit UsageTap(std::string_view content_type, size_t max_json_bytes = 4 * 1024 * 1024,
                    size_t max_event_bytes = 1024 * 1024);
  void feed(std::string_view data);
  // Parses what is pending (a JSON body) and returns the totals seen so far.
  Usage finish();

 private:
  enum class Mode { None, Json, Sse };
  // Json: Gathering collects the body in buf_; Walked means the first bytes were one whole
  // object, already walked into walked_; Broken means bytes other than whitespace followed
  // it, so the body counts nothing.
  enum class JsonState { Gathering, Walked, Broken };
  void feed_json(std::string_view data);
  void feed_sse(std::string_view data);
  void append_to_line(std::string_view part);
  void end_line();
  void on_whole_line(std::string_view line);
  void drop_event();
  void on_sse_line(std::string_view line);
  void dispatch_event();
  void on_sse_event(std::string_view data);

  Mode mode_ = Mode::None;
  JsonState json_ = JsonState::Gathering;
  size_t max_json_bytes_, max_event_bytes_;
  size_t json_bytes_ = 0;  // Json: bytes fed, gathered or not
  Usage walked_;           // Json: the totals with the walked body's usage merged in
  // Json: the body so far, unless it was walked as it arrived. Sse: the current line, up to
  // but excluding its terminator, so each byte is scanned once however the stream is split;
  // a line that arrives whole is read where it lies instead.
  std::string buf_;
  std::string event_data_;      // `data:` values of the current event, each followed by \n
  bool overflow_ = false;       // Json: body too big, skipped. Sse: current event skipped.
  bool line_overflow_ = false;  // Sse: current line too big, dropped until its end
  bool skip_lf_ = false;        // Sse: the last feed ended in \r; a leading \n pairs with it
  bool first_line_ = true;      // Sse: a byte order mark may open the stream
  Usage usage_;
};

}  // namespace keypool::proxy
