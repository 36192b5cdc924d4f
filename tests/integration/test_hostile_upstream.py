# SPDX-License-Identifier: Apache-2.0
"""Misbehaving backends behind h2splitd, on the simulated node.

Backend pods run raw HTTP/2 servers (h2raw.py serve MODE): one that never
sends SETTINGS, one that resets every stream (one port per RST_STREAM
code), one that answers a malformed response, one that sends garbage, ones
that close the connection in the middle of a response, and ones that
advertise SETTINGS_MAX_CONCURRENT_STREAMS 1 or 0. A real gRPC client (grpcio)
in a client pod calls each through its ClusterIP, with a deadline on every
RPC, and must get the status gRPC's PROTOCOL-HTTP2.md mapping gives (or
UNAVAILABLE for a transport that failed), well before the deadline. A good
client on a healthy Service keeps working throughout, and a Service that
mixes a healthy and a hostile endpoint loses only the RPCs the hostile one
had in flight (none when a retry is safe) and ejects it.
"""

import json
import os
import subprocess

import pytest

import testbed
from test_hostile import GoodTraffic, Usage

HERE = os.path.dirname(os.path.abspath(__file__))
H2RAW = os.path.join(HERE, "h2raw.py")
PORT = 50051
ADMIN = "http://127.0.0.1:9901"
DEADLINE = 15  # seconds, every RPC
OUTLIER_FAILURES = 5  # --outlier-failures default
H2_CONNECT_TIMEOUT_MS = 3000  # splitter_int.h: no SETTINGS by then, the connection failed
WORKERS = 2

# RST_STREAM code from the backend -> gRPC status (PROTOCOL-HTTP2.md, "Errors").
RST_TO_GRPC = {
    "NO_ERROR": "INTERNAL",
    "PROTOCOL_ERROR": "INTERNAL",
    "INTERNAL_ERROR": "INTERNAL",
    "REFUSED_STREAM": "UNAVAILABLE",
    "CANCEL": "CANCELLED",
    "ENHANCE_YOUR_CALM": "RESOURCE_EXHAUSTED",
    "INADEQUATE_SECURITY": "PERMISSION_DENIED",
}


class Bed:
    def __init__(self, node, build_dir):
        self.node = node
        self.good_servers = node.add_server_pods(["server-0", "server-1"])
        self.echo = node.add_service("echo", PORT, pods=self.good_servers[:1])
        self.hostile = {}
        for mode in ("silent", "malformed", "garbage", "mid-body", "no-trailers", "mcs1",
                     "mcs0"):
            self.hostile[mode] = self._serve(f"h-{mode}", mode)
        self.reset_pod = node.add_pod("h-reset")
        self.reset_svcs = {}
        for i, code in enumerate(sorted(RST_TO_GRPC)):
            port = 50061 + i
            p = self.reset_pod.popen([testbed.python(), "-u", H2RAW, "serve", "reset", "--port",
                                      str(port), "--rst-code", code],
                                     name=f"reset-{port}", watch=True)
            p.wait_line("ready", 15)
            self.reset_svcs[code] = node.add_service(f"reset-{i}", port,
                                                     pods=[self.reset_pod])
        self.mcs1_grpc_pod = node.add_pod("g-mcs1")
        self.mcs1_grpc_pod.start_grpc_server(args=["--max-concurrent-streams", "1"])
        self.mcs1_grpc = node.add_service("mcs1-grpc", PORT, pods=[self.mcs1_grpc_pod])
        # Healthy server-1 next to a hostile endpoint, in one Service each. Round
        # robin keeps sending the bad endpoint its share until it is ejected
        # (the worst case: ewma steers around it after one failure, and would
        # only probe it now and then, so it would take long to eject).
        self.mixed = {m: node.add_service(f"mixed-{m}", PORT,
                                          pods=[self.good_servers[1], self.hostile[m][0]],
                                          annotations={"h2split.io/lb-policy": "round_robin"})
                      for m in ("silent", "garbage")}
        self.mixed["mcs0"] = node.add_service(
            "mixed-mcs0", PORT, pods=[self.good_servers[1], self.hostile["mcs0"][0]])
        # mcs0 under round_robin too: ewma (the default) shuns a failing pod by
        # its latency penalty first, so its failures in a row, and the
        # ejection, would come only as that penalty decays (minutes).
        self.mixed_rr_mcs0 = node.add_service(
            "mixed-rr-mcs0", PORT, pods=[self.good_servers[1], self.hostile["mcs0"][0]],
            annotations={"h2split.io/lb-policy": "round_robin"})
        self.client_pod = node.add_pod("client-0")
        self.good_pod = node.add_pod("good-0")
        self.daemon = node.popen([os.path.join(build_dir, "h2splitd"), *node.daemon_args(),
                                  "--listen", "169.254.20.11:15001", "--workers", str(WORKERS),
                                  "--log-level", "info"],
                                 name="h2splitd", watch=True, stderr=subprocess.STDOUT)
        self.daemon.wait_line(r"msg=redirecting", 20)
        self.ctl = os.path.join(build_dir, "h2splitctl")
        self.usage = Usage(self.daemon.pid)
        self.ctl = os.path.join(build_dir, "h2splitctl")
        c = self.good_pod.grpc_client(self.echo.target4)
        assert c.server_stream(1, rpc_timeout=5)["ok"] == 1
        self.good = GoodTraffic(c)

    def _serve(self, pod_name, mode, *args):
        pod = self.node.add_pod(pod_name)
        proc = pod.popen([testbed.python(), "-u", H2RAW, "serve", mode, "--port", str(PORT),
                          "--pod", pod_name, *args], name=mode, watch=True)
        proc.wait_line("ready", 15)
        svc = self.node.add_service(mode, PORT, pods=[pod])
        return pod, proc, svc

    def call(self, svc, n=1, channel=None, **request):
        """n unary RPCs from client-0 to ``svc`` on ``channel`` (a grpc_client),
        else a fresh one; the summary."""
        c = channel or self.client_pod.grpc_client(svc.target4)
        try:
            request.setdefault("rpc_timeout", DEADLINE)
            return c.unary(n, timeout=DEADLINE * n + 30, **request)
        finally:
            if not channel:
                c.close()

    def endpoint(self, svc, pod):
        """``pod``'s entry in ``svc`` from `h2splitctl -o json endpoints` (the
        admin API's /endpoints, merged over workers)."""
        r = self.node.run([self.ctl, "--bpffs", self.node.bpffs, "-o", "json", "endpoints"],
                          check=False)
        assert r.returncode == 0, f"h2splitctl endpoints: rc={r.returncode} {r.stderr}"
        for s in json.loads(r.stdout)["services"]:
            if s["service"].split("/", 1)[-1].split(":", 1)[0] == svc.name:
                for ep in s["endpoints"]:
                    if ep["pod"] == pod:
                        return ep
        raise AssertionError(f"{pod} not among the endpoints of {svc.name}: {r.stdout[:2000]}")

    def endpoint_state(self, service, pod):
        """The STATE `h2splitctl endpoints` shows for ``pod`` in ``service``."""
        r = self.node.run([self.ctl, "--bpffs", self.node.bpffs, "-o", "json", "endpoints"])
        for svc in json.loads(r.stdout)["services"]:
            if svc["service"].split("/", 1)[-1].split(":", 1)[0] != service.name:
                continue
            for ep in svc["endpoints"]:
                if ep["pod"] == pod.name:
                    return ep["state"]
        return None

    def connections_to(self, pod):
        """The daemon's upstream connections from client-0 to ``pod`` now
        (they live in client-0's netns: --upstream-source pod)."""
        r = self.client_pod.run(["ss", "-Htn", "state", "established", "dst",
                                 f"{pod.ip4}:{PORT}"])
        return len(r.stdout.splitlines())

    def metric(self, name):
        r = self.node.run(["curl", "-s", "--max-time", "5", ADMIN + "/metrics"], check=False)
        for line in r.stdout.splitlines():
            if line.startswith(name + " "):
                return int(line.split()[1])
        return 0


@pytest.fixture(scope="module")
def bed(module_node, build_dir):
    b = Bed(module_node, build_dir)
    yield b
    b.good.stop()
    # Whatever the backends did, the daemon survived it without a should-not-happen.
    assert b.daemon.poll() is None, b.daemon.log_tail()
    assert b.metric("h2split_splitter_unexpected_total") == 0


@pytest.fixture
def healthy(bed):
    """The good client sees no error while the test runs; the daemon lives."""
    mark = bed.good.mark()
    rss0 = bed.usage.rss_kib()
    yield
    assert bed.daemon.poll() is None, f"h2splitd died\n{bed.daemon.log_tail()}"
    rpcs, ok, errors = bed.good.since(mark)
    assert not errors and ok == rpcs, f"good client failed: {errors} {bed.good.details[-3:]}"
    if not testbed.sanitized():  # ASan's shadow and quarantine are no measure of ours
        assert bed.usage.rss_kib() - rss0 < 32 * 1024, "daemon RSS grew by more than 32 MiB"


def only_error(r):
    assert r["ok"] == 0 and len(r["errors"]) == 1, r
    return next(iter(r["errors"]))


def test_backend_never_sends_settings(bed, healthy):
    """TCP connects, the daemon sends its preface and request, the backend
    never says anything: UNAVAILABLE once the daemon gives up on SETTINGS
    (H2_CONNECT_TIMEOUT_MS, 3 s), not a client deadline."""
    r = bed.call(bed.hostile["silent"][2])
    assert only_error(r) == "UNAVAILABLE", r
    assert r["ms"] < (DEADLINE - 5) * 1000, r


@pytest.mark.parametrize("code", sorted(RST_TO_GRPC))
def test_backend_resets_every_stream(bed, healthy, code):
    """RST_STREAM from the backend reaches the client as the status gRPC maps
    that code to (REFUSED_STREAM after the daemon's retries: it was not
    processed, so it is retried, up to 3 attempts)."""
    r = bed.call(bed.reset_svcs[code])
    assert only_error(r) == RST_TO_GRPC[code], r
    assert r["ms"] < 5000, r


def test_malformed_response(bed, healthy):
    """A response HEADERS without :status is malformed (RFC 9113 8.3.2): nghttp2
    resets the upstream stream with PROTOCOL_ERROR, the client sees INTERNAL."""
    r = bed.call(bed.hostile["malformed"][2])
    assert only_error(r) == "INTERNAL", r
    assert r["ms"] < 5000, r


def test_garbage_on_the_connection(bed, healthy):
    """Bytes that are not HTTP/2 frames end the upstream connection: its
    streams fail as a transport failure would, UNAVAILABLE."""
    r = bed.call(bed.hostile["garbage"][2])
    assert only_error(r) == "UNAVAILABLE", r
    assert r["ms"] < 5000, r


@pytest.mark.parametrize("mode", ["mid-body", "no-trailers"])
def test_backend_closes_in_the_middle(bed, healthy, mode):
    """Response headers, then 100 of a 1000-byte message (mid-body) or one whole
    message without trailers (no-trailers), then the backend closes: the
    client gets UNAVAILABLE (as if its own connection had dropped), never OK
    and never a hang."""
    r = bed.call(bed.hostile[mode][2])
    assert only_error(r) == "UNAVAILABLE", r
    assert r["ms"] < 5000, r


def test_max_concurrent_streams_1_grpc_backend(bed, healthy):
    """A gRPC server started with max_concurrent_streams 1: 20 RPCs, 10 at a
    time, 200 ms each, all succeed over more than one upstream connection."""
    r = bed.call(bed.mcs1_grpc, 20, concurrency=10, delay_ms=200)
    assert r["ok"] == 20 and not r["errors"], r


def test_max_concurrent_streams_1_strict_backend(bed, healthy):
    """The same with a backend that enforces its limit strictly: it refuses
    a second concurrent stream with REFUSED_STREAM (as Go's and grpc-go's
    servers do while their SETTINGS are unacknowledged). Refused streams were
    not processed and are retried; the pool remembers the peer's limit, so
    the retries go one per new connection and every RPC succeeds."""
    r = bed.call(bed.hostile["mcs1"][2], 20, concurrency=10)
    assert r["ok"] == 20 and not r["errors"], r


def accepted(bed, mode):
    """Connections the ``mode`` backend has accepted so far (it logs each one
    before it reads a byte, so before any stream on it is refused)."""
    return sum('"accepted"' in ln for ln in bed.hostile[mode][1].lines)


@pytest.mark.parametrize("policy", ["ewma", "round_robin"])
def test_max_concurrent_streams_0_beside_a_healthy_endpoint(bed, healthy, policy):
    """A backend that advertises SETTINGS_MAX_CONCURRENT_STREAMS 0 (and refuses,
    RFC 9113 5.1.2, whatever was sent before its SETTINGS arrived) beside a
    healthy one: 100 RPCs, 10 at a time, all succeed on server-1. The daemon
    opens no connection per stream to the bad pod (at most one per worker and
    client pod, which it keeps in case the limit is raised), and each stream
    that finds it allowing none counts a failure: ewma shuns it at once, and
    outlier ejection takes it out (round_robin, which would otherwise keep
    giving it every other stream)."""
    svc = bed.mixed["mcs0"] if policy == "ewma" else bed.mixed_rr_mcs0
    bad = bed.hostile["mcs0"][0]
    before = accepted(bed, "mcs0")
    r = bed.call(svc, 100, concurrency=10)
    assert r["ok"] == 100 and not r["errors"], r
    assert set(r["pods"]) == {"server-1"}, r
    assert accepted(bed, "mcs0") - before <= WORKERS, \
        f"{accepted(bed, 'mcs0') - before} connections to the MCS 0 backend for 100 RPCs"
    assert bed.connections_to(bad) <= WORKERS
    if policy == "round_robin":
        assert bed.endpoint_state(svc, bad) == "ejected"


def test_max_concurrent_streams_0_alone(bed, healthy):
    """The same backend alone in its Service: nothing else can take the
    streams, so each RPC fails UNAVAILABLE, naming the reason, after one wait
    of --pending-timeout (1 s) for the pod to raise its limit; never a hang,
    and still no connection per stream."""
    before = accepted(bed, "mcs0")
    r = bed.call(bed.hostile["mcs0"][2], 10, concurrency=5)
    assert r["errors"] == {"UNAVAILABLE": 10}, r
    assert all("MAX_CONCURRENT_STREAMS 0" in d for d in r["details"]), r
    assert r["ms"] < (DEADLINE - 5) * 1000, r
    assert accepted(bed, "mcs0") - before <= WORKERS, r
    assert bed.connections_to(bed.hostile["mcs0"][0]) <= WORKERS


def test_mixed_service_retries_what_was_not_processed(bed, healthy):
    """One healthy and one silent endpoint (TCP accepts, no SETTINGS) in a
    Service, 20 RPCs 10 at a time: the streams sent to the silent one were
    surely not processed, so each is retried on the healthy one once the
    daemon gives up on SETTINGS (3 s). They cost those RPCs that wait, no
    failure, and the silent endpoint ends up ejected (each stream it held
    counts a failure), so the next RPCs go straight to server-1. (One channel,
    so one worker: ejection is per worker.)"""
    silent = bed.hostile["silent"][0].name
    svc = bed.mixed["silent"]
    with bed.client_pod.grpc_client(svc.target4) as c:
        r = bed.call(svc, 20, channel=c, concurrency=10)
        assert r["ok"] == 20 and not r["errors"], r
        assert set(r["pods"]) == {"server-1"}, r
        ep = testbed.wait_for(lambda: (lambda e: e["state"] == "ejected" and e)(
            bed.endpoint(svc, silent)), 10, f"h2splitctl endpoints to show {silent} ejected")
        # Every stream it got went elsewhere, and it got at least the failures
        # that eject (--outlier-failures 5).
        assert ep["requests"] == ep["retries"] >= OUTLIER_FAILURES, ep
        assert ep["ejections"] == 1 and ep["ejected_until"] > 0, ep
        r = bed.call(svc, 10, channel=c)
    assert r["ok"] == 10 and set(r["pods"]) == {"server-1"}, r
    assert bed.endpoint(svc, silent)["requests"] == ep["requests"], "an ejected endpoint got RPCs"
    assert r["ms"] < H2_CONNECT_TIMEOUT_MS, r  # none waited for the silent endpoint


def test_mixed_service_fails_only_what_the_bad_endpoint_had(bed, healthy):
    """One healthy endpoint and one that answers requests with garbage, 20
    RPCs one at a time: a request already written there may have been
    processed, so it fails with UNAVAILABLE naming that endpoint (never
    INTERNAL, never a hang). Only those fail: one in flight at a time, so
    the bad endpoint fails --outlier-failures (5) RPCs in a row, is ejected,
    and server-1 serves every other RPC (on the channel's worker: ejection is
    per worker)."""
    bad = bed.hostile["garbage"][0]
    svc = bed.mixed["garbage"]
    r = bed.call(svc, 20)
    failed = r["errors"].get("UNAVAILABLE", 0)
    assert set(r["errors"]) <= {"UNAVAILABLE"}, r
    assert all(bad.ip4 in d for d in r["details"]), r
    assert failed == OUTLIER_FAILURES, r
    assert r["pods"] == {"server-1": 20 - failed}, r
    ep = bed.endpoint(svc, bad.name)
    assert ep["state"] == "ejected" and ep["ejections"] == 1, ep
    # Each failed RPC was the one stream the bad endpoint had in flight.
    assert ep["requests"] == ep["failures"] == failed, ep
    assert r["ms"] < 20 * 1000, r


def test_hostile_backends_leave_nothing_behind(bed):
    """After all of the above: no stream is left open in the daemon, and the
    client pod's channel to the healthy Service works at once."""
    testbed.wait_for(lambda: bed.metric("h2split_downstream_streams_active") <= 1, 15,
                     "streams to drain (the good client may have one in flight)")
    r = bed.call(bed.echo, 5)
    assert r["ok"] == 5, r
    assert bed.daemon.poll() is None
