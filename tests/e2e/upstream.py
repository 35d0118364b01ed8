"""An echoing loopback upstream for the serve tests: it records exactly what it
received (method, target, raw header lines in order, body length and SHA-256)
and answers with that record as JSON, so a test can check what baton forwarded
both from the response and from `Upstream.log`.

Behaviour is steered by the query string of the request (baton forwards the
query unchanged):
  delay_ms=N     wait N ms before answering
  status=N       answer with status N
  resp_bytes=N   answer with N bytes of body instead of the JSON record
  chunked=1      send the response body chunked
  close=1        close the connection without answering
  nolength=1     send the body delimited by closing the connection
  stall=1        send the response head, then nothing (for timeouts)
  early=1        answer at once, before reading the request body

HTTP/1.1 keep-alive is honoured. It can also serve TLS (`tls=(cert, key)`).
Thread-per-connection; started and stopped by the test in-process."""
import hashlib
import json
import socket
import ssl
import threading
import time
import urllib.parse

MAX_HEAD = 65536


class _Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        data = self.sock.recv(262144)
        if not data:
            raise EOFError
        self.buf += data

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise ValueError("head too large")
            self.fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        return head

    def read_exact_discard(self, n, h):
        got = 0
        while got < n:
            if not self.buf:
                self.fill()
            take = self.buf[: n - got]
            self.buf = self.buf[len(take):]
            h.update(take)
            got += len(take)
        return got

    def read_line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > MAX_HEAD:
                raise ValueError("line too long")
            self.fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_chunked(self, h):
        total = 0
        while True:
            size = int(self.read_line().split(b";")[0], 16)
            if size == 0:
                while self.read_line() != b"":
                    pass
                return total
            total += self.read_exact_discard(size, h)
            if self.read_line() != b"":
                raise ValueError("bad chunk end")


class Upstream:
    """Start with `Upstream().start()`; `port`, `log` (list of dicts), `stop()`."""

    def __init__(self, tls=None, host="127.0.0.1", port=0):
        """`host`/`port`: the address to listen on (another loopback address such
        as 127.0.0.2 for the upstream-name tests; 0: an ephemeral port)."""
        self.tls = tls
        self.log = []
        self.lock = threading.Lock()
        self.connections = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.ctx = None
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(tls[0], tls[1])

    def start(self):
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self):
        self.stopping = True
        try:
            self.sock.close()
        except OSError:
            pass

    def requests(self):
        with self.lock:
            return list(self.log)

    def clear(self):
        with self.lock:
            self.log.clear()

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _serve(self, s):
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ctx:
                s = self.ctx.wrap_socket(s, server_side=True)
            c = _Conn(s)
            while True:
                if not self._one(c):
                    break
        except (EOFError, OSError, ValueError, ssl.SSLError):
            pass
        finally:
            try:
                s.close()
            except OSError:
                pass

    def _one(self, c):
        head = c.read_head()
        lines = head.split(b"\r\n")
        method, target, version = lines[0].decode("latin-1").split(" ", 2)
        headers = []
        for ln in lines[1:]:
            name, _, value = ln.decode("latin-1").partition(":")
            headers.append([name, value.strip()])
        lower = {}
        for n, v in headers:
            lower.setdefault(n.lower(), []).append(v)
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(target).query)
        opt = {k: v[0] for k, v in q.items()}
        rec = {"method": method, "target": target, "version": version, "headers": headers,
               "t": time.time()}
        if opt.get("early") == "1":
            self._respond(c, rec, opt, close=True)
            with self.lock:
                self.log.append(rec)
            return False
        h = hashlib.sha256()
        if "chunked" in lower.get("transfer-encoding", []):
            rec["body_len"] = c.read_chunked(h)
            rec["body_framing"] = "chunked"
        elif "content-length" in lower:
            rec["body_len"] = c.read_exact_discard(int(lower["content-length"][0]), h)
            rec["body_framing"] = "length"
        else:
            rec["body_len"] = 0
            rec["body_framing"] = "none"
        rec["body_sha256"] = h.hexdigest()
        with self.lock:
            self.log.append(rec)
        if "delay_ms" in opt:
            time.sleep(int(opt["delay_ms"]) / 1000.0)
        if opt.get("close") == "1":
            return False
        conn_close = any(v.lower() == "close" for v in lower.get("connection", []))
        return self._respond(c, rec, opt, close=conn_close)

    def _respond(self, c, rec, opt, close):
        status = int(opt.get("status", "200"))
        if "resp_bytes" in opt:
            n = int(opt["resp_bytes"])
            body_iter = self._pattern(n)
            ctype = "application/octet-stream"
        else:
            body = json.dumps(rec).encode()
            n = len(body)
            body_iter = iter([body])
            ctype = "application/json"
        if status in (204, 304):
            c.sock.sendall(("HTTP/1.1 %d X\r\nX-Upstream: echo\r\n\r\n" % status).encode())
            return not close
        head = "HTTP/1.1 %d X\r\nContent-Type: %s\r\nX-Upstream: echo\r\n" % (status, ctype)
        head += "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n"  # hop-by-hop, to be stripped
        if opt.get("stall") == "1":
            c.sock.sendall((head + "Content-Length: %d\r\n\r\n" % n).encode())
            time.sleep(3600)
            return False
        if opt.get("nolength") == "1":
            c.sock.sendall((head + "\r\n").encode())
            for part in body_iter:
                c.sock.sendall(part)
            return False
        if opt.get("chunked") == "1":
            c.sock.sendall((head + "Transfer-Encoding: chunked\r\n\r\n").encode())
            for part in body_iter:
                if part:
                    c.sock.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
            c.sock.sendall(b"0\r\n\r\n")
        else:
            c.sock.sendall((head + "Content-Length: %d\r\n\r\n" % n).encode())
            for part in body_iter:
                c.sock.sendall(part)
        return not close

    @staticmethod
    def _pattern(n):
        block = bytes(range(256)) * 256
        while n > 0:
            part = block[: min(n, len(block))]
            n -= len(part)
            yield part
