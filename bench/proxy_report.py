"""Prints proxy.sh's figures. Args: results runs duration kp_idle kp_after kp_peak ng_idle (kB)."""
import statistics
import sys
from summarize import Results

path, runs, dur = sys.argv[1:4]
kp_idle, kp_after, kp_peak, ng_idle = (int(x) / 1024 for x in sys.argv[4:8])
r = Results(path)
T = ("direct", "nginx", "keypool")

print(f"\nGET ~260 B JSON; wrk -t1 --latency; median of {runs} x {dur} s per cell (targets interleaved)")
print(f"{'':>8} {'c1 p50':>7} {'c1 p99':>7} {'c1 req/s':>9} | {'c64 req/s':>9} {'c64 p50':>8} "
      f"{'c64 p99':>8} {'CPU us/req':>10} {'non-2xx':>8} {'sock err':>8}")
for t in T:
    print(f"{t:>8} {r.med('c1_' + t, 'p50'):>7.0f} {r.med('c1_' + t, 'p99'):>7.0f} "
          f"{r.med('c1_' + t, 'rps'):>9.0f} | {r.med('c64_' + t, 'rps'):>9.0f} "
          f"{r.med('c64_' + t, 'p50'):>8.0f} {r.med('c64_' + t, 'p99'):>8.0f} "
          f"{r.med('c64_' + t, 'cpu_ns_per_req') / 1000:>10.2f} "
          f"{r.total('c1_' + t, 'non2xx') + r.total('c64_' + t, 'non2xx'):>8} "
          f"{r.total('c1_' + t, 'errs') + r.total('c64_' + t, 'errs'):>8}")
print("(latencies in us; CPU us/req = CPU of the process serving that port, direct = upstream nginx)")


def added(t, q):
    return r.med("c1_" + t, q) - r.med("c1_direct", q)


def ratio(a, b):
    return a / b if b else float("nan")


print("\nadded latency at concurrency 1 (proxy minus direct, medians):")
for t in ("nginx", "keypool"):
    print(f"  {t:>8}: p50 {added(t, 'p50'):+.0f} us, p99 {added(t, 'p99'):+.0f} us")
m = lambda t, f: r.med("c64_" + t, f)
print("\nkeypool / nginx:")
print(f"  added p50 at c1 : {ratio(added('keypool', 'p50'), added('nginx', 'p50')):.2f}")
print(f"  added p99 at c1 : {ratio(added('keypool', 'p99'), added('nginx', 'p99')):.2f}")
print(f"  req/s at c64    : {ratio(m('keypool', 'rps'), m('nginx', 'rps')):.2f}")
print(f"  p99 at c64      : {ratio(m('keypool', 'p99'), m('nginx', 'p99')):.2f}")
print(f"  CPU per request : {ratio(m('keypool', 'cpu_ns_per_req'), m('nginx', 'cpu_ns_per_req')):.2f}")


def paired(field):
    # keypool and nginx ran back to back in each round, so their ratio within a round cancels
    # most of the machine's drift between rounds; the ratio of medians above does not.
    k, n = r.runs["c64_keypool"], r.runs["c64_nginx"]
    return sorted(ratio(a[field], b[field]) for a, b in zip(k, n))


for label, field in (("req/s at c64", "rps"), ("p99 at c64", "p99")):
    v = paired(field)
    print(f"  {label} per round: median {statistics.median(v):.2f}  "
          f"(rounds: {', '.join(f'{x:.2f}' for x in v)})")
print(f"\nRSS keypool: idle {kp_idle:.1f} MB, under load (mid-run, max) "
      f"{max(r.peak('c1_keypool', 'rss_kb'), r.peak('c64_keypool', 'rss_kb')) / 1024:.1f} MB, "
      f"after {kp_after:.1f} MB, peak (VmHWM) {kp_peak:.1f} MB")
print(f"RSS nginx proxy (master+worker): idle {ng_idle:.1f} MB, under load (mid-run, max) "
      f"{r.peak('c64_nginx', 'rss_kb') / 1024:.1f} MB")
