-- Prints one machine-readable line after the usual wrk report. Latencies are in microseconds.
done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("RESULT rps=%.1f p50=%d p99=%d mean=%.1f non2xx=%d errs=%d requests=%d\n",
    summary.requests / secs, latency:percentile(50), latency:percentile(99), latency.mean,
    e.status, e.connect + e.read + e.write + e.timeout, summary.requests))
end
