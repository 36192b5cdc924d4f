# SPDX-License-Identifier: Apache-2.0
"""Test gRPC server: ``python3 -m testbed.grpc_server --pod NAME --port 50051``.

Serves ``h2split.test.Echo`` (see testbed/echo.py for the message format)
with real grpcio and generic handlers on [::]:PORT (dual stack). Every
response names the pod that served it and the peer address it saw. Request
metadata (except reserved keys) comes back as trailing metadata, plus
``h2st-pod``; initial metadata carries ``h2st-pod`` too. Prints "ready" on
stdout once the port accepts connections. SIGTERM: stop accepting, let
running RPCs finish for --grace seconds, exit 0. ``--fail-status N`` answers
every RPC (Stats aside) with gRPC status N, a pod gone bad, or with
``--fail-every K`` every K-th one (K=2: every other, never two in a row);
SIGUSR1 heals it. ``--fail-pct P`` fails P% of the RPCs at random with
``--fail-status`` (default UNAVAILABLE) as Trailers-Only (no initial
metadata first), with ``grpc-retry-pushback-ms: --pushback`` when given;
``--stall-pct P --stall-ms MS`` holds P% of them MS ms first. ``cancelled``
in Stats counts RPCs the client (or h2splitd) cancelled before they ended;
``prev_attempts`` the grpc-previous-rpc-attempts values RPCs carried.
It also serves ``grpc.health.v1.Health/Check`` (hand-encoded protobuf, so
grpcio-health-checking is not needed): SERVING, or NOT_SERVING after
SIGUSR2 (which toggles), for any service name; Check calls are not
counted with the Echo RPCs.
"""

import argparse
import random
import signal
import sys
import threading
import time
import urllib.parse
from concurrent import futures

import grpc

from testbed import echo

RESERVED = {"user-agent", "te", "content-type", ":authority", "grpc-accept-encoding",
            "accept-encoding", "grpc-timeout", "grpc-encoding"}


def peer(context):
    """context.peer() with gRPC's percent-encoding undone: "ipv6:[fd00::1]:4242"."""
    return urllib.parse.unquote(context.peer())


SERVING, NOT_SERVING = 1, 2


class Health:
    """grpc.health.v1.Health on raw bytes: HealthCheckResponse{status} is
    field 1, varint: b"\\x08" + status."""

    def __init__(self):
        self.status = SERVING

    def toggle(self):
        self.status = NOT_SERVING if self.status == SERVING else SERVING

    def check(self, request, context):
        return bytes([0x08, self.status])

    def handler(self):
        return grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(self.check),
        })


class Echo:
    def __init__(self, pod, delay_ms, fail_status=0, fail_every=1, fail_pct=0.0,
                 pushback=None, stall_pct=0.0, stall_ms=0, pct_status=14):
        self.pod = pod
        self.pct_status = pct_status
        self.fail_pct = fail_pct
        self.pushback = pushback
        self.stall_pct = stall_pct
        self.stall_ms = stall_ms
        self.rng = random.Random()
        self.delay_ms = delay_ms
        self.fail_status = fail_status
        self.fail_every = max(1, fail_every)
        self.served = 0  # Echo RPCs begun, for --fail-every
        self.lock = threading.Lock()
        self.counts = {m: 0 for m in echo.METHODS}
        self.active = 0
        self.cancelled = 0
        self.stream_msgs = 0  # ServerStream messages yielded
        self.prev_attempts = {}  # grpc-previous-rpc-attempts value: RPCs that carried it
        self.peers = {}

    # -- helpers --
    def _begin(self, method, context):
        with self.lock:
            self.counts[method] += 1
            self.active += 1
            self.served += 1
            fail = self.fail_status and self.served % self.fail_every == 0
            p = peer(context)
            self.peers[p] = self.peers.get(p, 0) + 1
            for k, v in context.invocation_metadata():
                if k == "grpc-previous-rpc-attempts":
                    self.prev_attempts[v] = self.prev_attempts.get(v, 0) + 1
            random_fail = self.fail_pct and self.rng.random() * 100 < self.fail_pct
            stall = self.stall_pct and self.rng.random() * 100 < self.stall_pct
        context.add_callback(self._end)
        if random_fail:
            self._fail_trailers_only(context)
        if stall:
            time.sleep(self.stall_ms / 1000.0)
            self._cancelled(context)  # the hedge that won cancelled this one
        context.send_initial_metadata((("h2st-pod", self.pod),))
        md = [(k, v) for k, v in context.invocation_metadata()
              if k not in RESERVED and not k.startswith("grpc-")]
        context.set_trailing_metadata(tuple(md) + (("h2st-pod", self.pod),))
        if fail:
            self._finish(context, {"status": self.fail_status,
                                   "message": f"{self.pod}: --fail-status"})

    def _end(self):
        with self.lock:
            self.active -= 1

    def _fail_trailers_only(self, context):
        md = [("h2st-pod", self.pod)]
        if self.pushback is not None:
            md.append(("grpc-retry-pushback-ms", self.pushback))
        context.set_trailing_metadata(tuple(md))
        status = next((s for s in grpc.StatusCode
                       if s.value[0] == self.pct_status), grpc.StatusCode.UNKNOWN)
        context.abort(status, f"{self.pod}: --fail-pct")

    def _response(self, context, method, hdr, seq, received, req_bytes, req_payload=b""):
        delay = hdr.get("delay_ms", self.delay_ms)
        if delay:
            time.sleep(delay / 1000.0)
        payload = req_payload if hdr.get("echo") else b"x" * int(hdr.get("size", 0))
        return echo.encode({"pod": self.pod, "peer": peer(context), "method": method,
                            "seq": seq, "received": received, "req_bytes": req_bytes,
                            "size": len(payload)}, payload)

    @staticmethod
    def _finish(context, hdr):
        code = int(hdr.get("status", 0))
        if code:
            status = next((s for s in grpc.StatusCode if s.value[0] == code), None)
            if status is None:
                status = grpc.StatusCode.UNKNOWN
            context.abort(status, hdr.get("message", f"requested status {code}"))

    def _cancelled(self, context):
        if not context.is_active():
            with self.lock:
                self.cancelled += 1
            return True
        return False

    # -- methods --
    def unary(self, request, context):
        self._begin("Unary", context)
        hdr, payload = echo.decode(request)
        if hdr.get("status"):
            self._finish(context, hdr)
        return self._response(context, "Unary", hdr, 0, 1, len(payload), payload)

    def server_stream(self, request, context):
        self._begin("ServerStream", context)
        hdr, payload = echo.decode(request)
        for i in range(int(hdr.get("count", 1))):
            if self._cancelled(context):
                return
            if i and hdr.get("gap_ms"):
                time.sleep(hdr["gap_ms"] / 1000.0)
            with self.lock:
                self.stream_msgs += 1
            yield self._response(context, "ServerStream", hdr, i, 1, len(payload), payload)
        self._finish(context, hdr)

    def client_stream(self, request_iterator, context):
        self._begin("ClientStream", context)
        first, n, nbytes = None, 0, 0
        for req in request_iterator:
            hdr, payload = echo.decode(req)
            first = hdr if first is None else first
            n += 1
            nbytes += len(payload)
        first = first or {}
        self._finish(context, first)
        return self._response(context, "ClientStream", first, 0, n, nbytes)

    def bidi(self, request_iterator, context):
        self._begin("Bidi", context)
        n, nbytes = 0, 0
        for req in request_iterator:
            hdr, payload = echo.decode(req)
            n += 1
            nbytes += len(payload)
            if hdr.get("status"):
                self._finish(context, hdr)
            yield self._response(context, "Bidi", hdr, n - 1, n, nbytes, payload)

    def stats(self, request, context):
        with self.lock:
            return echo.encode({"pod": self.pod, "peer": peer(context), "method": "Stats",
                                "counts": dict(self.counts), "active": self.active,
                                "cancelled": self.cancelled, "peers": dict(self.peers),
                                "stream_msgs": self.stream_msgs,
                                "prev_attempts": dict(self.prev_attempts)})

    def handler(self):
        return grpc.method_handlers_generic_handler(echo.SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi),
            "Stats": grpc.unary_unary_rpc_method_handler(self.stats),
        })


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pod", required=True, help="name reported in every response")
    ap.add_argument("--port", type=int, default=50051)
    ap.add_argument("--listen", default="[::]", help="address to bind (default [::])")
    ap.add_argument("--delay-ms", type=int, default=0, help="delay before each response")
    ap.add_argument("--workers", type=int, default=64, help="max concurrent RPCs")
    ap.add_argument("--max-concurrent-streams", type=int, default=0,
                    help="HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (0: grpc default)")
    ap.add_argument("--grace", type=float, default=5.0, help="drain time on SIGTERM")
    ap.add_argument("--fail-status", type=int, default=0,
                    help="answer every RPC with this gRPC status (SIGUSR1: stop)")
    ap.add_argument("--fail-every", type=int, default=1,
                    help="with --fail-status: only every K-th RPC fails")
    ap.add_argument("--fail-pct", type=float, default=0.0,
                    help="fail this share (%%) of RPCs at random, Trailers-Only")
    ap.add_argument("--pushback", default=None,
                    help="with --fail-pct: grpc-retry-pushback-ms to send")
    ap.add_argument("--stall-pct", type=float, default=0.0,
                    help="hold this share (%%) of RPCs --stall-ms first")
    ap.add_argument("--stall-ms", type=int, default=0)
    a = ap.parse_args(argv)

    opts = [("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1)]
    if a.max_concurrent_streams:
        opts.append(("grpc.max_concurrent_streams", a.max_concurrent_streams))
    # With --fail-pct, --fail-status is the status of the random failures only.
    svc = Echo(a.pod, a.delay_ms, 0 if a.fail_pct else a.fail_status, a.fail_every,
               a.fail_pct, a.pushback, a.stall_pct, a.stall_ms, a.fail_status or 14)
    health = Health()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=a.workers),
                         handlers=[svc.handler(), health.handler()], options=opts,
                         maximum_concurrent_rpcs=None)
    bound = server.add_insecure_port(f"{a.listen}:{a.port}")
    if not bound:
        print(f"grpc_server: cannot bind {a.listen}:{a.port}", file=sys.stderr)
        return 1
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGUSR1, lambda *_: (setattr(svc, "fail_status", 0),
                                             setattr(svc, "fail_pct", 0)))
    signal.signal(signal.SIGUSR2, lambda *_: health.toggle())
    print(f"ready pod={a.pod} port={bound}", flush=True)
    stop.wait()
    server.stop(a.grace).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
