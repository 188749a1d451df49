#pragma once
// FoldDetector: spots obs-fold (RFC 9112 §5.2, a header line that starts with SP or HTAB and
// so continues the previous value), which llhttp accepts in both its modes and hands over
// as one more piece of the value. Both parsers refuse it: a proxy that unfolds differently
// from the next hop is one more way to disagree about a header.
//
// llhttp ends a value's piece before the end of the bytes fed only at a line break, so a
// piece that follows such a cut, or that starts right after a line break and blanks, is a
// continuation line. The last non-blank byte of the previous feed covers a fold whose line
// break came in an earlier read.
#include <cstddef>

namespace keypool::http {

class FoldDetector {
 public:
  // Around each llhttp_execute: the bytes fed, then where llhttp stopped (the end of the
  // bytes unless it paused or failed).
  void begin_feed(const char* begin, const char* end) {
    begin_ = begin;
    end_ = end;
  }
  void end_feed(const char* stop) {
    for (const char* q = stop; q && q > begin_; --q)
      if (q[-1] != ' ' && q[-1] != '\t') {
        last_fed_ = q[-1];
        return;
      }
  }
  // A value ended or a new name began: the next piece starts a value.
  void value_done() { cut_ = false; }
  // A non-empty piece of a header value at [at, at + len): true when it is a fold.
  bool folds(const char* at, size_t len) {
    if (cut_ || follows_line_break(at)) return true;
    cut_ = at + len != end_;
    return false;
  }

 private:
  // True when only blanks stand between `at` and a line break.
  bool follows_line_break(const char* at) const {
    const char* q = at;
    while (q > begin_ && (q[-1] == ' ' || q[-1] == '\t')) --q;
    const char before = q > begin_ ? q[-1] : last_fed_;
    return before == '\n' || before == '\r';
  }

  const char* begin_ = nullptr;
  const char* end_ = nullptr;
  char last_fed_ = 0;
  bool cut_ = false;  // the value's last piece ended before the end of its bytes
};

}  // namespace keypool::http
