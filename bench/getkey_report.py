"""Prints getkey.sh's figures. Args: results runs duration rss_idle rss_after rss_peak nkeys."""
import sys
from summarize import Results

path, runs, dur, idle, after, peak, nkeys = sys.argv[1:8]
r = Results(path)
print(f"\nGET /key?feature=img  keypool 1 worker, {nkeys} keys, admin token; "
      f"wrk -t1 --latency, median of {runs} x {dur} s")
print(f"{'conns':>5} {'req/s':>10} {'p50 us':>8} {'p99 us':>8} {'mean us':>8} "
      f"{'CPU us/req':>10} {'non-2xx':>8} {'sock err':>8}   req/s range")
for tag, conns in (("c64", 64), ("c1", 1)):
    lo, hi = r.spread(tag, "rps")
    print(f"{conns:>5} {r.med(tag, 'rps'):>10.0f} {r.med(tag, 'p50'):>8.0f} {r.med(tag, 'p99'):>8.0f} "
          f"{r.med(tag, 'mean'):>8.1f} {r.med(tag, 'cpu_ns_per_req') / 1000:>10.2f} "
          f"{r.total(tag, 'non2xx'):>8} {r.total(tag, 'errs'):>8}   {lo:.0f}..{hi:.0f}")
print("nginx, 1 worker, fixed ~260 B answer (the machine's floor; same wrk, interleaved):")
for tag, conns in (("ngx_c64", 64), ("ngx_c1", 1)):
    lo, hi = r.spread(tag, "rps")
    print(f"{conns:>5} {r.med(tag, 'rps'):>10.0f} {r.med(tag, 'p50'):>8.0f} {r.med(tag, 'p99'):>8.0f} "
          f"{r.med(tag, 'mean'):>8.1f} {r.med(tag, 'cpu_ns_per_req') / 1000:>10.2f} "
          f"{r.total(tag, 'non2xx'):>8} {r.total(tag, 'errs'):>8}   {lo:.0f}..{hi:.0f}")
rps, p99 = r.med("c64", "rps"), r.med("c64", "p99")
cpu = r.med("c64", "cpu_ns_per_req") / 1000
print(f"goal >= 100k req/s at 64 conns: {'MET' if rps >= 100_000 else 'NOT MET'} ({rps:.0f}); "
      f"p99 < 1 ms: {'MET' if p99 < 1000 else 'NOT MET'} ({p99:.0f} us); "
      f"CPU per request {cpu:.2f} us -> {1e6 / cpu if cpu else 0:.0f} req/s per fully used core")
print(f"keypool / nginx static at 64 conns: req/s {rps / r.med('ngx_c64', 'rps'):.2f}, "
      f"p99 {p99 / r.med('ngx_c64', 'p99'):.2f}")
print(f"keypool RSS: idle {int(idle) / 1024:.1f} MB, under load (mid-run, max) "
      f"{r.peak('c64', 'rss_kb') / 1024:.1f} MB, after {int(after) / 1024:.1f} MB, peak (VmHWM) {int(peak) / 1024:.1f} MB")
