# SPDX-License-Identifier: Apache-2.0
"""Plain TCP peers for the L4-path tests, run inside test-bed pods.

  l4_tools.py serve --port P          one thread per connection; a connection
                                      starts with a command line:
      UP <n>\\n        then n bytes; answers "<sha256 of them>\\n"
      DOWN <n>\\n      answers n bytes of the pattern, then closes
      PEER\\n          answers "<peer ip> <peer port>\\n"
  l4_tools.py upload HOST PORT N      prints {"sent_sha": .., "server_sha": ..}
  l4_tools.py download HOST PORT N [--slow-ms MS]
                                      prints {"sha": .., "n": ..}; with --slow-ms
                                      reads 16 KiB then pauses MS (a slow reader)
  l4_tools.py peername HOST PORT      prints {"peername": [ip, port], "server_saw": [ip, port]}
  l4_tools.py connects HOST PORT N    N sequential connects, each asks PEER;
                                      prints {"ok": k, "failed": n-k, "errors": [...]}
The data pattern is deterministic (pattern_block), so both ends can checksum
without holding the whole transfer in memory.
"""

import hashlib
import json
import socket
import sys
import threading
import time

BLOCK = hashlib.sha256(b"h2split").digest() * 2048  # 64 KiB


def pattern(n):
    """Yield the first n bytes of the pattern in chunks."""
    while n > 0:
        chunk = BLOCK[:min(n, len(BLOCK))]
        n -= len(chunk)
        yield chunk


def read_line(sock):
    buf = b""
    while not buf.endswith(b"\n"):
        b = sock.recv(1)
        if not b:
            raise ConnectionError("closed before a full line")
        buf += b
    return buf.decode().strip()


def handle(conn, addr):
    with conn:
        cmd = read_line(conn).split()
        if cmd[0] == "UP":
            left, h = int(cmd[1]), hashlib.sha256()
            while left:
                b = conn.recv(min(left, 1 << 20))
                if not b:
                    break
                h.update(b)
                left -= len(b)
            conn.sendall((h.hexdigest() + "\n").encode())
        elif cmd[0] == "DOWN":
            for chunk in pattern(int(cmd[1])):
                conn.sendall(chunk)
        elif cmd[0] == "PEER":
            conn.sendall(f"{addr[0]} {addr[1]}\n".encode())


def serve(port):
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    s.listen(512)
    print("ready", flush=True)
    while True:
        conn, addr = s.accept()
        threading.Thread(target=handle, args=(conn, addr), daemon=True).start()


def dial(host, port):
    return socket.create_connection((host, port), timeout=30)


def unmap(ip):
    return ip[7:] if ip.startswith("::ffff:") else ip


def main(argv):
    mode = argv[0]
    if mode == "serve":
        serve(int(argv[2]))
        return
    host, port = argv[1], int(argv[2])
    if mode == "upload":
        n, h = int(argv[3]), hashlib.sha256()
        with dial(host, port) as s:
            s.sendall(f"UP {n}\n".encode())
            for chunk in pattern(n):
                h.update(chunk)
                s.sendall(chunk)
            out = {"sent_sha": h.hexdigest(), "server_sha": read_line(s)}
    elif mode == "download":
        n, h, got = int(argv[3]), hashlib.sha256(), 0
        slow = float(argv[5]) / 1000 if len(argv) > 5 and argv[4] == "--slow-ms" else 0
        with dial(host, port) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            s.sendall(f"DOWN {n}\n".encode())
            while True:
                b = s.recv(16384 if slow else 1 << 20)
                if not b:
                    break
                h.update(b)
                got += len(b)
                if slow:
                    time.sleep(slow)  # pacing of the slow reader itself
        out = {"sha": h.hexdigest(), "n": got,
               "want_sha": hashlib.sha256(b"".join(pattern(n))).hexdigest() if n <= 1 << 26
               else None}
    elif mode == "peername":
        with dial(host, port) as s:
            peer = s.getpeername()
            s.sendall(b"PEER\n")
            ip, p = read_line(s).split()
            out = {"peername": [unmap(peer[0]), peer[1]], "server_saw": [unmap(ip), int(p)]}
    elif mode == "connects":
        ok, errors = 0, []
        for _ in range(int(argv[3])):
            try:
                with dial(host, port) as s:
                    s.sendall(b"PEER\n")
                    read_line(s)
                    ok += 1
            except OSError as e:
                errors.append(str(e))
        out = {"ok": ok, "failed": len(errors), "errors": errors[:5]}
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
