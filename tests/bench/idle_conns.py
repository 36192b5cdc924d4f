# SPDX-License-Identifier: Apache-2.0
"""Hold many idle HTTP/2 (h2c) connections to a proxy, for its RSS per connection.

  idle_conns.py HOST PORT N [--no-request] [--path /bench.Echo/Unary]

Opens N connections one after another. Each sends the client preface and
SETTINGS, acknowledges the server's SETTINGS and, unless --no-request, makes
one gRPC-shaped unary call (POST, application/grpc, te: trailers, a 10-byte
message) and reads the response to its END_STREAM: a gRPC channel that did
some work and went idle. Prints ``{"event": "ready", "open": N, ...}`` when
all are held, then holds them until stdin closes or a line arrives, and
prints ``{"event": "closed"}``. A connection that fails ends the run
(exit 1) with what failed.
"""

import argparse
import json
import resource
import socket
import struct
import sys
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST, SETTINGS, PING, GOAWAY = 0, 1, 3, 4, 6, 7
END_STREAM, ACK = 0x1, 0x1


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid) + payload


def literal(name, value):
    """HPACK literal header field without indexing, new name, no Huffman."""
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def request(authority, path):
    block = b"".join(literal(k, v) for k, v in (
        (":method", "POST"), (":scheme", "http"), (":path", path),
        (":authority", authority), ("content-type", "application/grpc"), ("te", "trailers")))
    msg = b"\x00" + struct.pack(">I", 10) + b"0123456789"
    return frame(HEADERS, 0x4, 1, block) + frame(DATA, END_STREAM, 1, msg)


def read_frames(sock, buf):
    """Yield (type, flags, sid, payload) as they arrive; buf is carried over."""
    while True:
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            ftype, flags = buf[3], buf[4]
            sid = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            payload = bytes(buf[9:9 + length])
            del buf[:9 + length]
            yield ftype, flags, sid, payload
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        buf += chunk


def open_one(addr, authority, path, with_request, timeout):
    s = socket.create_connection(addr, timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = PREFACE + frame(SETTINGS, 0, 0)
    if with_request:
        out += request(authority, path)
    s.sendall(out)
    got_settings, done = False, not with_request
    buf = bytearray()
    for ftype, flags, sid, payload in read_frames(s, buf):
        if ftype == SETTINGS and not flags & ACK:
            s.sendall(frame(SETTINGS, ACK, 0))
            got_settings = True
        elif ftype == PING and not flags & ACK:
            s.sendall(frame(PING, ACK, 0, payload))
        elif ftype == GOAWAY:
            raise ConnectionError(f"GOAWAY {payload[4:8].hex()}")
        elif ftype == RST and sid == 1:
            raise ConnectionError(f"RST_STREAM {payload.hex()}")
        elif ftype in (DATA, HEADERS) and sid == 1 and flags & END_STREAM:
            done = True
        if got_settings and done:
            break
    s.settimeout(None)
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("--no-request", action="store_true")
    ap.add_argument("--path", default="/bench.Echo/Unary")
    ap.add_argument("--timeout", type=float, default=10.0)
    a = ap.parse_args()
    want = a.n + 64
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, hard), max(want, hard)))
    addr = (a.host, a.port)
    authority = f"{a.host}:{a.port}"
    held = []
    t0 = time.monotonic()
    try:
        for i in range(a.n):
            held.append(open_one(addr, authority, a.path, not a.no_request, a.timeout))
    except (OSError, ConnectionError) as e:
        print(json.dumps({"event": "failed", "open": len(held), "error": str(e)}), flush=True)
        return 1
    print(json.dumps({"event": "ready", "open": len(held),
                      "seconds": round(time.monotonic() - t0, 3)}), flush=True)
    sys.stdin.readline()
    for s in held:
        s.close()
    print(json.dumps({"event": "closed"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
