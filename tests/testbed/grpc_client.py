# SPDX-License-Identifier: Apache-2.0
"""Test gRPC client with ONE long-lived channel: ``python3 -m testbed.grpc_client``.

Batch:        --target HOST:PORT --count N [--request JSON]
              runs N unary RPCs and prints one JSON summary (exit 0 if all OK).
Interactive:  --target HOST:PORT --interactive
              prints {"ready": true, ...}, then reads commands from stdin and
              answers each with exactly one JSON line:
  unary N [JSON]           N unary RPCs (JSON: request header + client keys)
  server_stream N [JSON]   one ServerStream RPC asking for N responses
  client_stream N [JSON]   one ClientStream RPC sending N messages
  bidi N [JSON]            one Bidi RPC sending N messages
  stats                    the serving pod's counters (Stats RPC)
  connect [SECONDS]        wait until the channel is READY
  state                    the channel's connectivity state
  loop MS [JSON]           unary RPCs, one started every MS ms, until `stop`
                           (client key fresh: a new channel, so a new
                           connection, for every RPC); run it with &
  progress                 the running loop's summary so far
  stop                     end the running loop (then `wait` for its summary)
  & COMMAND                run COMMAND in the background: {"started": ID}
  wait ID [SECONDS]        the result of background command ID
  quit
Client-side keys in JSON (not sent to the server): metadata {k: v},
timeout (seconds), concurrency (unary: RPCs in flight), wait_for_ready,
req_size (request payload bytes), fresh (loop). Everything else is the request header
(see testbed/echo.py).

A summary: {"cmd", "n" (RPCs), "ok", "messages", "pods" {pod: messages},
"peers" {peer seen by server: messages}, "errors" {CODE: RPCs},
"details" [first error strings], "initial" / "trailers" (metadata of the
last RPC), "bytes" (response payload), "last" (last response header), "ms"}.
"""

import argparse
import json
import os
import sys
import threading
import time

import grpc

from testbed import echo

CLIENT_KEYS = ("metadata", "timeout", "concurrency", "wait_for_ready", "req_size", "fresh")
DEFAULT_OPTIONS = {
    "grpc.enable_http_proxy": 0,
    # Channels in one process must not share connections (the default global
    # subchannel pool would make N channels to one target use one connection).
    "grpc.use_local_subchannel_pool": 1,
    "grpc.max_receive_message_length": -1,
    "grpc.max_send_message_length": -1,
}


class Summary:
    def __init__(self, cmd):
        self.d = {"cmd": cmd, "n": 0, "ok": 0, "messages": 0, "pods": {}, "peers": {},
                  "errors": {}, "details": [], "initial": {}, "trailers": {}, "bytes": 0,
                  "last": None}
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.lat = []  # ms per RPC, where measured

    def latency(self, ms):
        with self.lock:
            self.lat.append(ms)

    def message(self, data):
        hdr, payload = echo.decode(data)
        with self.lock:
            self.d["messages"] += 1
            self.d["bytes"] += len(payload)
            pod, peer = hdr.get("pod", "?"), hdr.get("peer", "?")
            self.d["pods"][pod] = self.d["pods"].get(pod, 0) + 1
            self.d["peers"][peer] = self.d["peers"].get(peer, 0) + 1
            self.d["last"] = hdr

    def done(self, call=None, error=None):
        with self.lock:
            self.d["n"] += 1
            if error is None:
                self.d["ok"] += 1
                src = call
            else:
                code = error.code().name if hasattr(error, "code") else type(error).__name__
                self.d["errors"][code] = self.d["errors"].get(code, 0) + 1
                if len(self.d["details"]) < 5:
                    det = error.details() if hasattr(error, "details") else str(error)
                    self.d["details"].append(f"{code}: {det}")
                src = error
            try:
                self.d["initial"] = _md(src.initial_metadata())
                self.d["trailers"] = _md(src.trailing_metadata())
            except Exception:
                pass

    def result(self):
        self.d["ms"] = round((time.monotonic() - self.t0) * 1000, 1)
        if self.lat:
            lat = sorted(self.lat)
            self.d["lat_ms"] = {f"p{q}": round(lat[min(len(lat) - 1, len(lat) * q // 100)], 2)
                                for q in (50, 90, 99)}
            self.d["lat_ms"]["max"] = round(lat[-1], 2)
        return self.d


def _md(md):
    out = {}
    for k, v in md or ():
        out[k] = v.hex() if isinstance(v, bytes) else v
    return out


class Runner:
    def __init__(self, target, options, base_request, base_metadata, timeout):
        self.target = target
        self.options = list(options.items())
        self.channel = grpc.insecure_channel(target, options=self.options)
        self.stopping = threading.Event()
        self.looping = None  # the running loop's Summary
        self.base_request = base_request
        self.base_metadata = base_metadata
        self.timeout = timeout
        self.state = "IDLE"
        self.channel.subscribe(self._on_state, try_to_connect=False)
        self.jobs = {}
        self.next_job = 1

    def _on_state(self, s):
        self.state = s.name

    def _split(self, arg):
        req = dict(self.base_request)
        if arg:
            req.update(json.loads(arg))
        cl = {k: req.pop(k) for k in CLIENT_KEYS if k in req}
        md = dict(self.base_metadata)
        md.update(cl.get("metadata") or {})
        kw = {"timeout": cl.get("timeout", self.timeout), "metadata": tuple(md.items()) or None}
        if cl.get("wait_for_ready") is not None:
            kw["wait_for_ready"] = bool(cl["wait_for_ready"])
        payload = b"x" * int(cl.get("req_size", 0))
        return echo.encode(req, payload), kw, cl

    def unary(self, n, arg=None):
        msg, kw, cl = self._split(arg)
        s = Summary("unary")
        mc = self.channel.unary_unary(echo.path("Unary"))
        window = max(1, int(cl.get("concurrency", 1)))
        if window == 1:
            for _ in range(n):
                t = time.monotonic()
                try:
                    resp, call = mc.with_call(msg, **kw)
                    s.message(resp)
                    s.done(call)
                except grpc.RpcError as e:
                    s.done(error=e)
                s.latency((time.monotonic() - t) * 1000)
            return s.result()
        inflight = []
        sent = 0
        while sent < n or inflight:
            while sent < n and len(inflight) < window:
                t = time.monotonic()
                fut = mc.future(msg, **kw)
                fut.add_done_callback(lambda _f, t=t: s.latency((time.monotonic() - t) * 1000))
                inflight.append(fut)
                sent += 1
            fut = inflight.pop(0)
            try:
                s.message(fut.result())
                s.done(fut)
            except grpc.RpcError as e:
                s.done(error=e)
        return s.result()

    def loop(self, pace_ms, arg=None):
        """Unary RPCs, one started every ``pace_ms`` (back to back when one takes
        longer), until ``stop``. With the client key ``fresh`` each RPC gets a
        channel of its own, so each is a new connect."""
        msg, kw, cl = self._split(arg)
        s = self.looping = Summary("loop")
        fresh = bool(cl.get("fresh"))
        self.stopping.clear()
        due = time.monotonic()
        while not self.stopping.is_set():
            ch = grpc.insecure_channel(self.target, options=self.options) if fresh \
                else self.channel
            try:
                resp, call = ch.unary_unary(echo.path("Unary")).with_call(msg, **kw)
                s.message(resp)
                s.done(call)
            except grpc.RpcError as e:
                s.done(error=e)
            finally:
                if fresh:
                    ch.close()
            due += pace_ms / 1000.0
            pause = due - time.monotonic()
            if pause > 0:
                self.stopping.wait(pause)  # pacing of the client itself
            else:
                due = time.monotonic()
        return s.result()

    def server_stream(self, n, arg=None):
        msg, kw, _ = self._split(arg)
        hdr = json.loads(msg.partition(b"\n")[0])
        hdr["count"] = n
        msg = echo.encode(hdr, msg.partition(b"\n")[2])
        s = Summary("server_stream")
        it = self.channel.unary_stream(echo.path("ServerStream"))(msg, **kw)
        try:
            for m in it:
                s.message(m)
            s.done(it)
        except grpc.RpcError as e:
            s.done(error=e)
        return s.result()

    def client_stream(self, n, arg=None):
        msg, kw, _ = self._split(arg)
        s = Summary("client_stream")
        try:
            resp, call = self.channel.stream_unary(echo.path("ClientStream")).with_call(
                iter([msg] * n), **kw)
            s.message(resp)
            s.done(call)
        except grpc.RpcError as e:
            s.done(error=e)
        return s.result()

    def bidi(self, n, arg=None):
        msg, kw, _ = self._split(arg)
        s = Summary("bidi")
        it = self.channel.stream_stream(echo.path("Bidi"))(iter([msg] * n), **kw)
        try:
            for m in it:
                s.message(m)
            s.done(it)
        except grpc.RpcError as e:
            s.done(error=e)
        return s.result()

    def stats(self):
        try:
            resp = self.channel.unary_unary(echo.path("Stats"))(b"", timeout=self.timeout)
            hdr, _ = echo.decode(resp)
            return {"cmd": "stats", **hdr}
        except grpc.RpcError as e:
            return {"cmd": "stats", "error": f"{e.code().name}: {e.details()}"}

    def connect(self, seconds=10.0):
        try:
            grpc.channel_ready_future(self.channel).result(timeout=seconds)
            return {"cmd": "connect", "state": "READY"}
        except grpc.FutureTimeoutError:
            return {"cmd": "connect", "state": self.state, "error": "timeout"}

    def execute(self, line):
        """Run one command line; return its JSON-able answer."""
        line = line.strip()
        if line.startswith("&"):
            job = self.next_job
            self.next_job += 1
            box = {}
            t = threading.Thread(target=lambda: box.update(r=self.execute(line[1:])),
                                 daemon=True)
            self.jobs[job] = (t, box)
            t.start()
            return {"started": job}
        parts = line.split(None, 2)
        if not parts:
            return {"error": "empty command"}
        cmd, args = parts[0], parts[1:]
        if cmd in ("unary", "server_stream", "client_stream", "bidi"):
            n = int(args[0]) if args else 1
            return getattr(self, cmd)(n, args[1] if len(args) > 1 else None)
        if cmd == "loop":
            return self.loop(float(args[0]) if args else 5.0, args[1] if len(args) > 1 else None)
        if cmd == "progress":
            if not self.looping:
                return {"cmd": "progress", "error": "no loop"}
            with self.looping.lock:
                return {"cmd": "progress", **json.loads(json.dumps(self.looping.d))}
        if cmd == "stop":
            self.stopping.set()
            return {"cmd": "stop"}
        if cmd == "stats":
            return self.stats()
        if cmd == "connect":
            return self.connect(float(args[0]) if args else 10.0)
        if cmd == "state":
            return {"cmd": "state", "state": self.state}
        if cmd == "wait":
            t, box = self.jobs[int(args[0])]
            t.join(float(args[1]) if len(args) > 1 else None)
            if t.is_alive():
                return {"cmd": "wait", "id": int(args[0]), "error": "timeout"}
            del self.jobs[int(args[0])]
            return {"id": int(args[0]), **box["r"]}
        return {"error": f"unknown command {cmd!r}"}


def _kv(items):
    out = {}
    for it in items:
        k, _, v = it.partition("=")
        out[k] = int(v) if v.lstrip("-").isdigit() else v
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", required=True, help="HOST:PORT, [V6]:PORT or a gRPC URI")
    ap.add_argument("--count", type=int, help="batch mode: this many unary RPCs")
    ap.add_argument("--interactive", action="store_true", help="read commands from stdin")
    ap.add_argument("--request", default="{}", help="JSON request header for every RPC")
    ap.add_argument("--metadata", action="append", default=[], help="k=v on every RPC")
    ap.add_argument("--option", action="append", default=[], help="channel arg k=v")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-RPC deadline (s)")
    a = ap.parse_args(argv)

    options = dict(DEFAULT_OPTIONS)
    options.update(_kv(a.option))
    r = Runner(a.target, options, json.loads(a.request),
               {k: str(v) for k, v in _kv(a.metadata).items()}, a.timeout)
    if not a.interactive:
        res = r.unary(a.count or 1)
        print(json.dumps(res), flush=True)
        return 0 if res["ok"] == res["n"] else 3
    print(json.dumps({"ready": True, "target": a.target}), flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        try:
            res = r.execute(line)
        except Exception as e:  # a bad command must not kill the channel
            res = {"error": f"{type(e).__name__}: {e}"}
        print(json.dumps(res), flush=True)
    r.channel.close()
    sys.stdout.flush()
    os._exit(0)  # skip grpcio's slow interpreter-exit shutdown


if __name__ == "__main__":
    sys.exit(main())
