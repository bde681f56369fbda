#!/usr/bin/env python3
"""Helper for compare-nginx.sh (see that script for what is compared).

  compare-nginx.py ports N                      print N distinct free 127.0.0.1 ports
  compare-nginx.py upstream PORT RECORD         recording upstream: 200 to any method,
                                                appends "METHOD raw-path[ upgrade=..]" to RECORD
  compare-nginx.py ready URL                    wait (bounded) until URL answers 200
  compare-nginx.py wait PORT...                 wait (bounded) until each port accepts
  compare-nginx.py probe RECORD NAME=PORT...    send the raw inputs to each target and
                                                print a markdown table
"""
import socket
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

READ_TIMEOUT = 2.0    # per input and target: time allowed for a status line
SETTLE = 0.15         # wait after the answer before reading the upstream's record


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    print(" ".join(str(s.getsockname()[1]) for s in socks))
    for s in socks:
        s.close()


# ---------------------------------------------------------------- upstream

class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    record = None
    lock = threading.Lock()

    def handle_one_request(self):
        # Generic over methods: no do_<METHOD> lookup, so any method
        # (lowercase, CONNECT, made-up) is answered the same way.
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                # Still reached us: record it, the error answer has been sent.
                self.write_record("unparsed " + self.raw_requestline.decode("latin-1").strip())
                return
            self.drain_body()
            # The raw request-target: self.path has leading "//" collapsed.
            words = self.raw_requestline.decode("latin-1").split()
            line = f"{self.command} {words[1] if len(words) > 1 else self.path}"
            upgrade = self.headers.get("Upgrade")
            if upgrade is not None:
                line += f" upgrade={upgrade}"
            idem = self.headers.get("Idempotency-Key")
            if idem is not None:
                line += f" idempotency-key={idem}"
            self.write_record(line)
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command.upper() != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()
        except (OSError, ValueError):
            self.close_connection = True

    def write_record(self, line):
        with self.lock, open(self.record, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def drain_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return
                self.rfile.read(size + 2)
        n = int(self.headers.get("Content-Length") or 0)
        if n > 0:
            self.rfile.read(min(n, 1 << 20))

    def log_message(self, *args):
        pass


def upstream(port, record):
    Recorder.record = record
    open(record, "w").close()
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer(("127.0.0.1", int(port)), Recorder).serve_forever()


def wait_ready(url, secs=15.0):
    deadline = time.monotonic() + secs
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    while True:
        try:
            with opener.open(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"{url} never answered 200")
        time.sleep(0.1)


def wait_ports(ports, secs=15.0):
    deadline = time.monotonic() + secs
    for p in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", int(p)), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit(f"port {p} never accepted a connection")
                time.sleep(0.05)


# ---------------------------------------------------------------- inputs

def req(line, headers=(("Host", "localhost"),), body=b""):
    head = line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


def callback(path, extra=()):
    return req(f"POST {path} HTTP/1.1", (("Host", "localhost"),) + tuple(extra), b"{}")


def inputs():
    rows = []
    # 1. spellings of a callback path (route "orig": /orig/{reference}/cb), wrong token
    for p in ["/orig/cart-1/cb", "//orig/cart-1/cb", "/orig//cart-1/cb", "/orig/./cart-1/cb",
              "/orig/x/../cart-1/cb", "/orig%2Fcart-1/cb", "/%6Frig/cart-1/cb",
              "/orig/cart-1/c%62", "/orig/cart-1/cb;x"]:
        rows.append((f"POST {p}?token=bad", callback(p + "?token=bad")))
    # 2. the path authback itself forwards to, reached from outside
    forged = (("Idempotency-Key", "forged"), ("Authback-Attempt", "1"))
    rows.append(("POST /klarna/authorized + Idempotency-Key: forged, Authback-Attempt: 1",
                 callback("/klarna/authorized", forged)))
    rows.append(("POST //klarna/authorized", callback("//klarna/authorized")))
    rows.append(("POST /klarna/./authorized", callback("/klarna/./authorized")))
    # 3. request heads
    rows += [
        ("GET / + Host: a + Host: a", req("GET / HTTP/1.1", (("Host", "a"), ("Host", "a")))),
        ("GET / HTTP/1.1, no Host", req("GET / HTTP/1.1", ())),
        ("GET / + Host: a b", req("GET / HTTP/1.1", (("Host", "a b"),))),
        ("GET * HTTP/1.1", req("GET * HTTP/1.1")),
        ("OPTIONS * HTTP/1.1 (control)", req("OPTIONS * HTTP/1.1")),
        ("get / HTTP/1.1", req("get / HTTP/1.1")),
        ("CONNECT evil.example:443 + Host: evil.example:443",
         req("CONNECT evil.example:443 HTTP/1.1", (("Host", "evil.example:443"),))),
        ("GET http://other.example/ + Host: localhost", req("GET http://other.example/ HTTP/1.1")),
        ("GET / HTTP/1.0, no Host (control)", req("GET / HTTP/1.0", ())),
    ]
    # 4. one reading, end to end: spellings PHP reads another way (the
    #    routes "magento", "woo" and "php" are fenced to a foreign address)
    t = "quote-token"
    many = "&".join(f"a{i}=1" for i in range(1000))
    for p in [f"/checkout/klarna/authorize/..?token={t}",
              f"/checkout/klarna/authorize/%2e%2e?token={t}",
              f"/index.php/checkout/klarna/authorize/..?token={t}",
              f"/checkout/klarna/authorize?token={t}&dryRun=1&dryRun%00=0",
              f"/checkout/klarna/authorize?token={t}&dryRun=1&+dryRun=0",
              f"/checkout/klarna/authorize?token={t}&{many}&dryRun=1",
              f"/checkout/klarna/authorize/dryRun/0/../..?token={t}&dryRun=1",
              "/?+wc-api=KP_WC_AUTHORIZATION", "/?wc-api%00=KP_WC_AUTHORIZATION",
              "/shop/?%20wc-api=kp_wc_authorization",
              "/shop/wc-api/KP_WC_AUTHORIZATION", "/?wc-api=KP_WC_AUTHORIZATION!",
              "/checkout/authorized.php/", "/checkout/authorized.php/x",
              "/checkout/authorized.php%2F"]:
        label = p if len(p) < 90 else p[:40] + "…(1,000 parameters)…" + p[-10:]
        rows.append((f"POST {label}", callback(p)))
    form = b'{"session_id":"s","authorization_token":"a","x":"&wc-api=KP_WC_AUTHORIZATION&"}'
    rows.append(("POST / form-typed JSON body with &wc-api=KP_WC_AUTHORIZATION&",
                 req("POST / HTTP/1.1", (("Host", "localhost"),
                     ("Content-Type", "application/x-www-form-urlencoded")), form)))
    # 5. upgrades
    rows.append(("GET / + Upgrade: h2c, HTTP2-Settings", req("GET / HTTP/1.1", (
        ("Host", "localhost"), ("Connection", "Upgrade, HTTP2-Settings"),
        ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA")))))
    rows.append(("GET / + Upgrade: websocket (control)", req("GET / HTTP/1.1", (
        ("Host", "localhost"), ("Connection", "Upgrade"), ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")))))
    return rows


# ---------------------------------------------------------------- probing

def send(port, raw):
    """Sends raw on a fresh connection; returns the status code, `closed` or `timeout`."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
    except OSError as e:
        return f"connect error ({e.strerror})"
    deadline = time.monotonic() + READ_TIMEOUT
    buf = b""
    try:
        s.sendall(raw)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            s.settimeout(left)
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    except socket.timeout:
        return "timeout"
    except OSError:
        pass  # reset: fall through to what was read
    finally:
        s.close()
    line = buf.split(b"\n", 1)[0].decode("latin-1").strip()
    parts = line.split(" ")
    if len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1].isdigit():
        return parts[1]
    return "closed" if not line else f"garbage `{line[:30]}`"


def probe(record, targets):
    names = [t.split("=", 1)[0] for t in targets]
    ports = [int(t.split("=", 1)[1]) for t in targets]
    head = ["input"]
    for n in names:
        head += [f"{n} status", f"{n}: reached upstream?"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, raw in inputs():
        cells = [f"`{label}`"]
        for port in ports:
            open(record, "w").close()
            status = send(port, raw)
            time.sleep(SETTLE)
            with open(record, encoding="utf-8") as f:
                seen = [ln.strip() for ln in f if ln.strip()]
            cells += [status, "<br>".join(f"`{s}`" for s in seen) if seen else "no"]
        out.append("| " + " | ".join(cells) + " |")
    print("\n".join(out))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "ports":
        free_ports(int(args[0]))
    elif cmd == "upstream":
        upstream(args[0], args[1])
    elif cmd == "ready":
        wait_ready(args[0])
    elif cmd == "wait":
        wait_ports(args)
    elif cmd == "probe":
        probe(args[0], args[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
