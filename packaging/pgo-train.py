#!/usr/bin/env python3
"""Training run for keypool's profile-guided build (packaging/build.sh calls it).

Starts the instrumented keypool binary on loopback in front of a local fake upstream,
provisions a tier, keys and a team token through the admin API, and sends the mix of
requests a proxy serves most: small JSON calls (GET and POST), streamed SSE answers, a few
`GET /key` and a few refused calls. keypool then stops on SIGTERM, and the instrumented
binary writes its profile (.gcda files beside the objects) on the way out.

The profile only has to say which code is hot and which way branches go: counts are
relative, so a few thousand requests are enough.
Usage: pgo-train.py KEYPOOL_BIN CONFIG_FILE     env: PGO_REQUESTS (default 8000)
Exits non-zero, with the reason, if keypool does not serve the calls as expected.
"""
import http.client
import http.server
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

CHAT = json.dumps({
    "id": "chatcmpl-train", "object": "chat.completion", "created": 1700000000,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello there."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
}).encode()

SSE_EVENTS = [
    b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n',
    b'data: {"choices":[{"delta":{"content":"lo"}}]}\n\n',
    b'data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}\n\n',
    b"data: [DONE]\n\n",
]


class Upstream(http.server.BaseHTTPRequestHandler):
    """The fake API: answers 401 unless keypool injected one of the pooled keys."""
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, the body would wait for the
    # peer's delayed ACK (40 ms) on every answer.
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def _body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _answer(self, status, body, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _serve(self):
        body = self._body()
        if not (self.headers.get("Authorization") or "").startswith("Bearer sk-train-"):
            return self._answer(401, b'{"error":"no pooled key"}')
        if b'"stream":true' in body:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for event in SSE_EVENTS:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            return None
        return self._answer(200, CHAT)

    do_GET = _serve
    do_POST = _serve


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(conn, method, path, token, body=None, headers=None):
    h = {"Authorization": f"Bearer {token}"}
    if body is not None:
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    conn.request(method, path, body=body, headers=h)
    r = conn.getresponse()
    return r.status, r.read()


def wait_health(port, proc, seconds=15):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"pgo-train: keypool exited at start (status {proc.returncode})")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit("pgo-train: keypool did not answer /health")


def provision(port, admin):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    steps = [("/admin/tiers", {"name": "pro", "features": {"openai": 1000000}})]
    steps += [("/admin/keys", {"name": f"k{i}", "key": f"sk-train-{i}", "tier": "pro",
                               "service": "openai"}) for i in range(4)]
    for path, doc in steps:
        status, body = call(c, "POST", path, admin, json.dumps(doc))
        if status not in (200, 201):
            sys.exit(f"pgo-train: POST {path} answered {status}: {body[:200]!r}")
    status, body = call(c, "POST", "/admin/tokens", admin, json.dumps({"name": "train", "tier": "pro", "allow_key_handout": True}))
    if status not in (200, 201):
        sys.exit(f"pgo-train: POST /admin/tokens answered {status}")
    return json.loads(body)["token"]


def client(port, token, count, failures):
    """One keep-alive connection; mostly what the benchmark sends, some of everything else."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    small = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi" * 200}]})
    streamed = json.dumps({"model": "gpt-4o-mini", "stream": True, "messages": []})
    for i in range(count):
        kind = i % 100
        if kind < 75:
            want, got = 200, call(conn, "GET", "/v1/openai/v1/chat/completions", token)
        elif kind < 90:
            want, got = 200, call(conn, "POST", "/v1/openai/v1/chat/completions", token, small)
        elif kind < 97:
            want, got = 200, call(conn, "POST", "/v1/openai/v1/chat/completions", token, streamed)
        elif kind < 98:
            want, got = 200, call(conn, "GET", "/key?feature=openai", token)
        elif kind < 99:
            want, got = 401, call(conn, "GET", "/v1/openai/v1/models", "kp_not_a_token")
        else:
            want, got = 400, call(conn, "GET", "/v1/openai/v1/%2e%2e/secret", token)
        if got[0] != want:
            failures.append(f"request {i} ({kind}): {got[0]}, expected {want}: {got[1][:200]!r}")
            return


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    binary, config = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    total = int(os.environ.get("PGO_REQUESTS", "8000"))
    threads = 4

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()

    with tempfile.TemporaryDirectory(prefix="keypool-pgo.") as work:
        services = os.path.join(work, "services")
        os.mkdir(services)
        with open(os.path.join(services, "openai.yaml"), "w") as f:
            f.write(f"name: openai\nbase_url: http://127.0.0.1:{upstream.server_port}\n"
                    "auth_scheme: bearer\nfeature: openai\n")
        port, admin = free_port(), "pgo-admin-" + secrets.token_hex(16)
        env = dict(os.environ, ENCRYPTION_KEY=secrets.token_hex(32), ADMIN_TOKEN=admin,
                   SERVER_HOST="127.0.0.1", SERVER_PORT=str(port), WORKERS="1",
                   DB_PATH=os.path.join(work, "pool.db"), SERVICES_DIR=services, LOG_LEVEL="warn")
        log = open(os.path.join(work, "keypool.log"), "w+")
        proc = subprocess.Popen([binary, "--config", config, "serve"], env=env, cwd=work,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_health(port, proc)
            token = provision(port, admin)
            failures = []
            started = time.monotonic()
            workers = [threading.Thread(target=client, args=(port, token, total // threads, failures))
                       for _ in range(threads)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            if failures:
                sys.exit("pgo-train: " + failures[0])
            print(f"pgo-train: {total} requests through keypool in {time.monotonic() - started:.1f} s")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    sys.exit("pgo-train: keypool did not stop on SIGTERM; no profile written")
            upstream.shutdown()
        if proc.returncode != 0:
            log.seek(0)
            sys.exit(f"pgo-train: keypool exited with status {proc.returncode}: {log.read()[-2000:]}")


if __name__ == "__main__":
    main()
