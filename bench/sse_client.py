#!/usr/bin/env python3
"""SSE measuring client for sse.sh. For each target, RUNS streams (targets interleaved), each on a
fresh connection: time to first event (request sent -> first event read), per-event transit
(upstream write time embedded in the event -> read here; same host, CLOCK_MONOTONIC) and the gaps
between events. Prints medians over the runs and the figures added by each proxy over direct.
Usage: sse_client.py RUNS name=host:port/path@authorization-header-value ..."""
import json
import re
import socket
import statistics
import sys
import time

EVENT_T = re.compile(rb'"t":(\d+)')


def dechunker():
    """Generator-based chunked decoder: send raw bytes, get decoded bytes."""
    buf = b""
    out = b""
    state = "size"
    remaining = 0
    while True:
        data = yield out
        out = b""
        buf += data
        while True:
            if state == "size":
                if b"\r\n" not in buf:
                    break
                line, buf = buf.split(b"\r\n", 1)
                remaining = int(line.split(b";")[0], 16)
                state = "data" if remaining else "end"
            elif state == "data":
                take = buf[:remaining]
                out += take
                buf = buf[len(take):]
                remaining -= len(take)
                if remaining:
                    break
                state = "crlf"
            elif state == "crlf":
                if len(buf) < 2:
                    break
                buf = buf[2:]
                state = "size"
            else:
                break


def one_stream(host, port, path, auth, timeout=30):
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {auth}\r\n"
           f"Accept: text/event-stream\r\nConnection: close\r\n\r\n").encode()
    t_send = time.monotonic_ns()
    s.sendall(req)
    raw = b""
    while b"\r\n\r\n" not in raw:
        d = s.recv(65536)
        if not d:
            raise RuntimeError("connection closed before the response head")
        raw += d
    head, rest = raw.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        raise RuntimeError(f"{host}:{port}{path}: status {status}: {rest[:200]!r}")
    chunked = b"transfer-encoding: chunked" in head.lower()
    dec = dechunker() if chunked else None
    if dec:
        next(dec)
    text = b""
    arrivals = []  # (recv_ns, sent_ns)
    done = False
    data = rest
    while not done:
        now = time.monotonic_ns()
        text += dec.send(data) if dec else data
        while b"\n\n" in text:
            ev, text = text.split(b"\n\n", 1)
            if ev.startswith(b"data: [DONE]"):
                done = True
                break
            m = EVENT_T.search(ev)
            if m:
                arrivals.append((now, int(m.group(1))))
        if done:
            break
        data = s.recv(65536)
        if not data:
            break
    s.close()
    if not arrivals:
        raise RuntimeError(f"{host}:{port}{path}: no events")
    transit = [(r - t) / 1000 for r, t in arrivals]
    gaps = [(b[0] - a[0]) / 1000 for a, b in zip(arrivals, arrivals[1:])]
    # How much each gap differs from the gap at which the upstream wrote the two events.
    jitter = [abs((b[0] - a[0]) - (b[1] - a[1])) / 1000 for a, b in zip(arrivals, arrivals[1:])]
    return {
        "events": len(arrivals),
        "ttfe": (arrivals[0][0] - t_send) / 1000,
        "transit_mean": statistics.fmean(transit),
        "transit_max": max(transit),
        "gap_mean": statistics.fmean(gaps) if gaps else 0.0,
        "jitter_mean": statistics.fmean(jitter) if jitter else 0.0,
        "jitter_max": max(jitter) if jitter else 0.0,
    }


def main():
    runs = int(sys.argv[1])
    targets = []
    for spec in sys.argv[2:]:
        name, rest = spec.split("=", 1)
        addr, auth = rest.split("@", 1)
        hostport, path = addr.split("/", 1)
        host, port = hostport.split(":")
        targets.append((name, host, int(port), "/" + path, auth))
    res = {t[0]: [] for t in targets}
    for t in targets:  # one unmeasured stream each: connection set-up, pools, caches
        one_stream(*t[1:])
    for _ in range(runs):
        for name, *rest in targets:
            res[name].append(one_stream(*rest))
    med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in res.items()}
    worst = {n: {k: max(r[k] for r in rs) for k in ("transit_max", "jitter_max")} for n, rs in res.items()}
    print(f"\n{'':>8} {'events':>6} {'TTFE':>7} {'transit mean':>12} {'transit max':>11} "
          f"{'gap mean':>9} {'gap error mean':>14} {'max':>6}   worst transit / gap error, all runs")
    for n, m in med.items():
        print(f"{n:>8} {m['events']:>6.0f} {m['ttfe']:>7.0f} {m['transit_mean']:>12.0f} "
              f"{m['transit_max']:>11.0f} {m['gap_mean']:>9.0f} {m['jitter_mean']:>14.0f} "
              f"{m['jitter_max']:>6.0f}   {worst[n]['transit_max']:.0f} / {worst[n]['jitter_max']:.0f}")
    print("(us; medians over runs. TTFE = request sent -> first event read; transit = upstream write ->"
          "\n client read of each event; gap error = |gap read here - gap written by the upstream|)")
    d = med["direct"]
    print("\nadded over direct (medians):")
    for n, m in med.items():
        if n == "direct":
            continue
        print(f"  {n:>8}: time to first event {m['ttfe'] - d['ttfe']:+.0f} us, "
              f"added delay per event (mean transit) {m['transit_mean'] - d['transit_mean']:+.0f} us, "
              f"added inter-event gap error {m['jitter_mean'] - d['jitter_mean']:+.0f} us (mean), "
              f"worst event {worst[n]['transit_max']:.0f} us in transit")
    print("RESULTS_JSON " + json.dumps(med))


if __name__ == "__main__":
    main()
