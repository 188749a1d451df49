#!/usr/bin/env python3
"""Paced SSE upstream for sse.sh: every request on 127.0.0.1:PORT gets a chunked
text/event-stream of N events, the first right after the response head, then one every
INTERVAL_MS. Each event carries the CLOCK_MONOTONIC time (ns) at which it was written, so a
client on the same host can measure each event's transit time. Requests without an injected
key ("Authorization: Bearer sk-...") get 401. HTTP/1.1 keep-alive is supported.
Usage: sse_upstream.py PORT [N=64] [INTERVAL_MS=20]"""
import socket
import socketserver
import sys
import time

PORT = int(sys.argv[1])
N = int(sys.argv[2]) if len(sys.argv) > 2 else 64
INTERVAL_NS = int(float(sys.argv[3] if len(sys.argv) > 3 else 20) * 1e6)
PAD = "x" * 60  # events of ~120 B, like a streamed chat-completion delta


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            need = int(headers.get("content-length", "0"))
            while len(buf) < need:
                data = sock.recv(65536)
                if not data:
                    return
                buf += data
            buf = buf[need:]
            close = headers.get("connection", "").lower() == "close"
            if not headers.get("authorization", "").startswith("Bearer sk-"):
                body = b'{"error":"missing upstream key"}\n'
                sock.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                if close:
                    return
                continue
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                         b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
            start = time.monotonic_ns()
            for i in range(N):
                due = start + i * INTERVAL_NS
                now = time.monotonic_ns()
                if due > now:
                    time.sleep((due - now) / 1e9)
                ev = 'data: {"i":%d,"t":%d,"pad":"%s"}\n\n' % (i, time.monotonic_ns(), PAD)
                sock.sendall(chunk(ev.encode()))
            sock.sendall(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
            if close:
                return


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128


if __name__ == "__main__":
    with Server(("127.0.0.1", PORT), Handler) as srv:
        srv.serve_forever()
