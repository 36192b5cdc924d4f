# SPDX-License-Identifier: Apache-2.0
"""The HTTP/2 splitter on the simulated node: each RPC of one client
connection goes to a backend pod of h2splitd's choosing, with gRPC
semantics, source identity, back-pressure and metrics kept.

One bed for the module (tests that kill things are in
test_splitter_faults.py). Every test asserts what a client or backend
sees: which pod served each RPC, the status and bytes that arrived, the
peer address the backend saw.

The file is also the tool the tests run inside pods for what the bed's
``testbed.grpc_client`` cannot do (cancel a call, stall a reader,
ping-pong a bidi stream, binary metadata, checksummed 16 MiB messages):
``python3 test_splitter.py MODE TARGET ...`` prints one JSON line.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
THIS_FILE = os.path.abspath(__file__)
sys.path.insert(0, os.path.dirname(HERE))  # tests/, for testbed when run as a tool

import testbed  # noqa: E402
from testbed import peer_addr  # noqa: E402

ADMIN = "http://127.0.0.1:9901"
WEB_DIR_NAME = "www"
H2C_PORT, H1_PORT = 8080, 8081
MIB = 1 << 20
# The issue asks for a 60 s interleaved bidi stream; CI runs it for 10 s to
# stay inside its budget (H2S_BIDI_SECONDS=60 for the full soak).
BIDI_SECONDS = float(os.environ.get("H2S_BIDI_SECONDS", "10"))


# ---------------------------------------------------------------- helpers

class Metrics:
    """A parsed Prometheus text scrape of h2splitd's /metrics."""

    LINE = re.compile(r'^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$')
    LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

    def __init__(self, text):
        self.text = text
        self.samples = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = self.LINE.match(line)
            if m:
                self.samples.append((m[1], dict(self.LABEL.findall(m[2] or "")), float(m[3])))

    def rows(self, name, **labels):
        return [(lab, v) for n, lab, v in self.samples
                if n == name and all(lab.get(k) == str(w) for k, w in labels.items())]

    def get(self, name, **labels):
        """Sum of every sample of ``name`` whose labels include ``labels`` (0 if none)."""
        return sum(v for _, v in self.rows(name, **labels))

    def has(self, name):
        return any(n == name for n, _, _ in self.samples)


class Daemon:
    """h2splitd in a bed's node netns, started the way test_redirect.py does."""

    def __init__(self, node, build_dir):
        self.node = node
        self.binary = os.path.join(build_dir, "h2splitd")
        self.ctl_binary = os.path.join(build_dir, "h2splitctl")
        self.proc = None
        self.args = None

    def start(self, *extra, timeout=20, wrapper=()):
        """``wrapper``: argv to run the daemon under (prlimit, valgrind ...)."""
        if not os.access(self.binary, os.X_OK):
            pytest.fail(f"{self.binary} missing: run make", pytrace=False)
        self.args = tuple(extra)
        argv = [*wrapper, self.binary, *self.node.daemon_args(), "--log-level", "debug",
                *extra]
        self.proc = self.node.popen(argv, name="h2splitd", watch=True, stderr=subprocess.STDOUT)
        self.proc.wait_line(r"msg=redirecting", timeout)
        testbed.wait_for(lambda: self.admin("/readyz")[0] == 200, 10, "h2splitd /readyz 200")
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=20):
        if self.proc is not None:
            self.proc.stop(timeout)
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid

    def admin(self, path):
        """(HTTP status, body) of an admin endpoint, asked inside the node netns."""
        r = self.node.run(["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}",
                           ADMIN + path], check=False)
        body, _, code = r.stdout.rpartition("\n")
        return int(code or 0), body

    def metrics(self):
        code, body = self.admin("/metrics")
        assert code == 200, f"/metrics answered {code}: {body[:300]}"
        return Metrics(body)

    def services(self):
        code, body = self.admin("/services")
        assert code == 200, f"/services answered {code}: {body[:300]}"
        return {s["name"]: s for s in json.loads(body)["services"]}

    def wait_usable(self, svc, usable, timeout=10):
        """Wait until the daemon's state in force has ``usable`` ready endpoints for ``svc``."""
        def applied():
            s = self.services().get(svc.name)
            return s is not None and s["endpoints_usable"] == usable
        try:
            testbed.wait_for(applied, timeout,
                             f"h2splitd to show {usable} usable endpoints of {svc.name}")
        except TimeoutError as e:
            raise AssertionError(f"{e}; /services: {self.services().get(svc.name)}") from None

    def ctl(self, *args):
        r = subprocess.run([self.ctl_binary, "--bpffs", self.node.bpffs, "-o", "json", *args],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"h2splitctl {' '.join(args)}: {r.stderr}"
        return json.loads(r.stdout)

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    def notable(self, n=15):
        """The daemon's last non-debug log lines, for failure messages."""
        lines = [l for l in (self.proc.lines if self.proc else []) if "level=debug" not in l]
        return "\n".join(lines[-n:])


def tool(place, mode, *args, timeout=120):
    """Run this file as a tool in ``place``; its JSON answer."""
    r = place.run([testbed.python(), THIS_FILE, mode, *map(str, args)], timeout=timeout,
                  check=False)
    assert r.returncode == 0, f"tool {mode} {args} exited {r.returncode}: {r.stderr[-2000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def tool_proc(place, mode, *args):
    """Start this file as a tool in ``place`` with stdin open (for modes that wait on it)."""
    return place.popen([testbed.python(), THIS_FILE, mode, *map(str, args)],
                       name=f"tool-{mode}", watch=True, stdin=subprocess.PIPE)


def tell(proc, line):
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def peer_ips(summary):
    """{ip: messages} of the peers the backends reported in a client summary."""
    out = {}
    for p, n in summary["peers"].items():
        ip = peer_addr(p)[0]
        out[ip] = out.get(ip, 0) + n
    return out


def short(summary):
    """A summary without the bulky fields, for assertion messages."""
    return {k: summary.get(k) for k in ("cmd", "n", "ok", "messages", "pods", "errors",
                                        "details", "bytes", "ms") if k in summary}


def assert_all_ok(summary, what):
    assert summary["ok"] == summary["n"] and not summary["errors"], \
        f"{what}: {summary['n'] - summary['ok']} of {summary['n']} failed: {short(summary)}"


def assert_spread(counts, pods, total, tolerance, what):
    """Every pod in ``pods`` served within ``tolerance`` of total/len(pods)."""
    share = total / len(pods)
    assert set(counts) == set(pods), f"{what}: served by {counts}, want exactly {pods}"
    off = {p: n for p, n in counts.items() if abs(n - share) > tolerance * share}
    assert not off, (f"{what}: want each pod within {tolerance:.0%} of {share:g}, "
                     f"got {counts} (off: {off})")


# ---------------------------------------------------------------- the bed

class Bed:
    """Three Echo pods behind several services, client pods, a web pod, h2splitd.

    Services (all created before h2splitd starts, so it knows them at once):
      echo      3 pods, opted in, IPv4        echo-plain  same pods, not opted in
      echo-dual 3 pods, opted in, dual stack  metered     same pods (metrics test only)
      scale     scale-0..2 (+ scale-3 later)  empty / notready: nothing ready
      h2web     nghttpd (h2c) in web-0        h1web       python http.server in web-0
    """

    LOAD_PODS, CHANNELS_PER_POD = 5, 4

    def __init__(self, node, build_dir):
        self.node = node
        self.servers = node.add_server_pods(["server-0", "server-1", "server-2"])
        self.scalers = node.add_server_pods(["scale-0", "scale-1", "scale-2"])
        self.clients = [node.add_pod(f"client-{i}") for i in range(2)]
        self.load = [node.add_pod(f"load-{i}") for i in range(self.LOAD_PODS)]
        self.web = node.add_pod("web-0")
        self.www = os.path.join(node.workdir, WEB_DIR_NAME)
        os.makedirs(self.www, exist_ok=True)
        self.blobs = {"blob": os.urandom(MIB), "odd": os.urandom(99991)}
        for name, data in self.blobs.items():
            with open(os.path.join(self.www, name), "wb") as f:
                f.write(data)
        self.web.popen(["nghttpd", "--no-tls", "-d", self.www, str(H2C_PORT)], name="nghttpd")
        self.web.popen([testbed.python(), "-u", "-m", "http.server", "--bind", "::",
                        str(H1_PORT), "--directory", self.www], name="http-server",
                       watch=True).wait_line("Serving", 15)
        testbed.wait_for(lambda: node.run(["nghttp", "-n", f"http://{self.web.ip4}:{H2C_PORT}/"
                                           "odd"], check=False).returncode == 0,
                         15, "nghttpd in web-0 to serve")

        self.echo = node.add_service("echo", pods=self.servers)
        self.plain = node.add_service("echo-plain", pods=self.servers, app_protocol=None)
        self.dual = node.add_service("echo-dual", pods=self.servers, family="dual")
        self.metered = node.add_service("metered", pods=self.servers)
        self.scale = node.add_service("scale", pods=self.scalers)
        self.empty = node.add_service("empty", pods=())
        self.notready = node.add_service("notready", pods=(), not_ready=self.servers)
        self.h2web = node.add_service("h2web", 80, target_port=H2C_PORT, pods=[self.web],
                                      port_name="http")
        self.h1web = node.add_service("h1web", 80, target_port=H1_PORT, pods=[self.web],
                                      port_name="http")
        # Direct channels from the node to each server (not redirected: the node
        # cgroup is outside the attached one), to read the servers' own counters.
        self.direct = {p.name: node.grpc_client(f"{p.ip4}:{testbed.GRPC_PORT}")
                       for p in self.servers}
        self.daemon = Daemon(node, build_dir)
        self.default_args = ("--lb-policy", "round_robin", "--workers", "2",
                             "--drain-timeout", "5")

    def ensure_daemon(self, *args):
        """h2splitd running with ``args`` (default: round robin, 2 workers); restart if not."""
        args = tuple(args) or self.default_args
        if self.daemon.running() and self.daemon.args == args:
            return self.daemon
        self.daemon.stop()
        return self.daemon.start(*args)

    def client(self, place, svc, family=4, **kw):
        return place.grpc_client(svc.target(family), **kw)

    def server_stats(self):
        out = {}
        for name, c in self.direct.items():
            s = c.stats()
            assert "error" not in s, f"Stats of {name} directly: {s}"
            out[name] = s
        return out


@pytest.fixture(scope="module")
def the_bed(module_node, build_dir):
    return Bed(module_node, build_dir)


@pytest.fixture
def bed(the_bed):
    the_bed.ensure_daemon()
    return the_bed


# ---------------------------------------------------------------- balance

@pytest.mark.parametrize("policy", ["round_robin", "least_request"])
def test_one_channel_spreads_rpcs_over_every_pod(the_bed, policy):
    bed = the_bed
    bed.ensure_daemon("--lb-policy", policy, "--workers", "2", "--drain-timeout", "5")
    pods = [p.name for p in bed.servers]
    with bed.client(bed.clients[0], bed.echo) as c:
        r = c.unary(3000, concurrency=8)
    assert_all_ok(r, "3000 unary RPCs on one channel")
    if policy == "round_robin":
        # One connection lives on one worker, whose round robin is exact.
        assert r["pods"] == {p: 1000 for p in pods}, \
            f"round_robin over one channel: want 1000 RPCs per pod, got {r['pods']}"
    else:
        assert_spread(r["pods"], pods, 3000, 0.10, f"{policy} over one channel")
    assert set(peer_ips(r)) == {bed.clients[0].ip4}, \
        f"backends saw peers {peer_ips(r)}, want only client-0 ({bed.clients[0].ip4})"


def test_twenty_channels_spread_in_total(bed):
    places = [p for p in bed.load for _ in range(bed.CHANNELS_PER_POD)]
    clients = testbed.open_clients(places, bed.echo.target4)
    try:
        results = testbed.unary_all(clients, 150, concurrency=2, timeout=120)
    finally:
        for c in clients:
            c.close()
    total = {}
    for place, r in zip(places, results):
        assert_all_ok(r, f"150 RPCs from a channel in {place.name}")
        assert set(peer_ips(r)) == {place.ip4}, \
            f"RPCs from {place.name} reached backends as {peer_ips(r)}, want {place.ip4}"
        for pod, n in r["pods"].items():
            total[pod] = total.get(pod, 0) + n
    assert_spread(total, [p.name for p in bed.servers], 3000, 0.10,
                  "20 channels x 150 RPCs, in total")


def test_scale_out_new_pod_gets_its_share_on_the_open_channel(bed):
    node, svc, d = bed.node, bed.scale, bed.daemon
    node.set_endpoints(svc, bed.scalers)
    d.wait_usable(svc, 3)
    with bed.client(bed.clients[0], svc) as c:
        first = c.unary(300, concurrency=4)
        assert_all_ok(first, "RPCs before scale-out")
        assert set(first["pods"]) == {"scale-0", "scale-1", "scale-2"}, short(first)
        conns = d.metrics().get("h2split_downstream_connections_total")
        new = node.pods.get("scale-3") or node.add_pod("scale-3")
        if new.server is None or new.server.poll() is not None:
            new.start_grpc_server()
        node.set_endpoints(svc, bed.scalers + [new])
        d.wait_usable(svc, 4)
        r = c.unary(1000, concurrency=4)
        assert_all_ok(r, "1000 RPCs after scale-out")
        assert_spread(r["pods"], ["scale-0", "scale-1", "scale-2", "scale-3"], 1000, 0.10,
                      "the 1000 RPCs after scale-3 joined, same channel")
        after = d.metrics().get("h2split_downstream_connections_total")
        assert after == conns, (f"the client reconnected: downstream connections went "
                                f"{conns:g} -> {after:g} during the scale-out")


def test_scale_in_finishes_running_streams_and_sends_no_new_ones(bed):
    node, svc, d = bed.node, bed.scale, bed.daemon
    new = node.pods.get("scale-3") or node.add_pod("scale-3")
    if new.server is None or new.server.poll() is not None:
        new.start_grpc_server()
    pods = bed.scalers + [new]
    node.set_endpoints(svc, pods)
    d.wait_usable(svc, 4)
    victim = new
    direct = {p.name: node.grpc_client(f"{p.ip4}:{testbed.GRPC_PORT}") for p in pods}
    try:
        with bed.client(bed.clients[0], svc) as c:
            # 200 streams, round robin: 50 on each pod, each ~8 s long.
            jobs = [c.start("server_stream", 40, delay_ms=200, size=16, rpc_timeout=60)
                    for _ in range(200)]

            def all_running():
                active = {n: x.stats().get("active", 0) for n, x in direct.items()}
                return sum(active.values()) == 200 and active
            active = testbed.wait_for(all_running, 15, "200 streams running on the 4 pods")
            running = active[victim.name]
            assert running >= 40, f"scale-3 runs {running} of the 200 streams: {active}"
            node.set_endpoints(svc, bed.scalers)
            d.wait_usable(svc, 3)
            after = c.unary(300, concurrency=4)
            assert_all_ok(after, "RPCs after scale-3 left the endpoints")
            assert "scale-3" not in after["pods"], \
                f"RPCs started after scale-3 was removed still went to it: {after['pods']}"
            done = [c.wait(j, 60) for j in jobs]
    finally:
        for x in direct.values():
            x.close()
    on_it = [r for r in done if "scale-3" in r["pods"]]
    bad = [short(r) for r in on_it if r["ok"] != 1 or r["messages"] != 40]
    assert len(on_it) == running, \
        f"{running} streams were running on scale-3, {len(on_it)} results name it"
    assert not bad, f"streams running on scale-3 when it was removed did not finish: {bad[:5]}"
    others = [short(r) for r in done if r["ok"] != 1 or r["messages"] != 40]
    assert not others, f"other streams failed during scale-in: {others[:5]}"


# ---------------------------------------------------------------- gRPC semantics

def test_unary_and_16mib_messages_both_ways_arrive_intact(bed):
    r = tool(bed.clients[0], "big", bed.echo.target4)
    bad = [x for x in r["rpcs"] if not x["ok"]]
    assert not bad, f"messages that did not round-trip intact: {bad}"
    sizes = {x["size"] for x in r["rpcs"]}
    assert 16 * MIB in sizes, r


def test_server_streaming_10k_messages(bed):
    with bed.client(bed.clients[0], bed.echo) as c:
        r = c.server_stream(10000, size=100, timeout=120)
    assert_all_ok(r, "one ServerStream of 10000 messages")
    assert r["messages"] == 10000 and r["bytes"] == 10000 * 100, short(r)
    assert r["last"]["seq"] == 9999, f"last message seq {r['last']['seq']}, want 9999"
    assert len(r["pods"]) == 1, f"one stream, served by several pods: {r['pods']}"


def test_client_streaming(bed):
    with bed.client(bed.clients[0], bed.echo) as c:
        r = c.client_stream(2000, req_size=1000, timeout=120)
    assert_all_ok(r, "one ClientStream of 2000 messages")
    assert r["last"]["received"] == 2000 and r["last"]["req_bytes"] == 2000 * 1000, \
        f"the server got {r['last']['received']} messages / {r['last']['req_bytes']} bytes, " \
        "want 2000 / 2000000"


def test_bidi_all_at_once(bed):
    with bed.client(bed.clients[0], bed.echo) as c:
        r = c.bidi(2000, req_size=100, echo=True, timeout=120)
    assert_all_ok(r, "one Bidi stream of 2000 messages")
    assert r["messages"] == 2000 and r["bytes"] == 2000 * 100, short(r)


def test_bidi_interleaved_ping_pong(bed):
    """Each message is sent only after the answer to the previous one arrived:
    a splitter that buffered a stream's messages would stall it at once."""
    r = tool(bed.clients[0], "pingpong", bed.echo.target4, BIDI_SECONDS,
             timeout=BIDI_SECONDS + 60)
    assert r["code"] == "OK", f"interleaved bidi ended with {r['code']}: {r}"
    assert not r["bad"], f"answers out of step with requests: {r['bad'][:5]}"
    assert r["rounds"] >= 100, f"only {r['rounds']} round trips in {BIDI_SECONDS:g} s: {r}"
    assert len(r["pods"]) == 1, f"one stream, answered by several pods: {r['pods']}"
    assert r["peers"] == [bed.clients[0].ip4], r


def test_metadata_and_trailers_arrive_unchanged(bed):
    r = tool(bed.clients[0], "metadata", bed.echo.target4)
    sent = sorted(map(tuple, r["sent"]))
    for case in ("unary", "error", "stream"):
        got = r[case]
        trailers = sorted(tuple(kv) for kv in got["trailers"] if kv[0] != "h2st-pod")
        assert trailers == sent, \
            f"{case}: trailers the server echoed differ from the metadata sent:\n" \
            f"  sent {sent}\n  got  {trailers}"
        assert any(k == "h2st-pod" for k, _ in got["initial"]), \
            f"{case}: initial metadata lost the server's h2st-pod header: {got['initial']}"
    assert r["error"]["code"] == "ABORTED" and r["error"]["details"] == "with trailers", r


@pytest.mark.parametrize("code,name", [(3, "INVALID_ARGUMENT"), (5, "NOT_FOUND"),
                                       (8, "RESOURCE_EXHAUSTED"), (13, "INTERNAL"),
                                       (14, "UNAVAILABLE"), (16, "UNAUTHENTICATED")])
def test_error_status_and_message_arrive_unchanged(bed, code, name):
    msg = f"status {code} from the backend: 100% ünïcødé, \"quotes\", %20 and a\ttab"
    with bed.client(bed.clients[0], bed.echo) as c:
        r = c.unary(1, status=code, message=msg)
        s = c.server_stream(3, status=code, message=msg)
    assert r["errors"] == {name: 1}, f"unary asked to fail with {name}: {short(r)}"
    assert r["details"] == [f"{name}: {msg}"], f"unary status message changed: {r['details']}"
    assert s["messages"] == 3 and s["errors"] == {name: 1}, \
        f"ServerStream of 3 then {name}: {short(s)}"
    assert s["details"] == [f"{name}: {msg}"], f"stream status message changed: {s['details']}"
    assert s["trailers"].get("h2st-pod"), f"trailers lost after an error: {s['trailers']}"


def ended_early(bed, before, what, timeout=5):
    """Wait until exactly one more ServerStream ran on the servers and none is
    active any more. The streams these tests start would run for 30 s: an end
    within ``timeout`` means the server was told. (The test server's
    ``cancelled`` counter cannot tell: grpcio stops its generator before the
    handler can look at the context.)"""
    def ended():
        now = bed.server_stats()
        started = sum(now[p]["counts"]["ServerStream"] - before[p]["counts"]["ServerStream"]
                      for p in now)
        return started == 1 and all(s["active"] == 0 for s in now.values())
    try:
        testbed.wait_for(ended, timeout, what)
    except TimeoutError as e:
        raise AssertionError(f"{e}; server stats: " + ", ".join(
            f"{p}: active={s['active']} streams={s['counts']['ServerStream']}"
            for p, s in bed.server_stats().items())) from None


def test_client_cancel_reaches_the_server(bed):
    before = bed.server_stats()
    p = tool_proc(bed.clients[0], "cancel", bed.echo.target4)
    try:
        r = json.loads(p.next_line(30, "the cancel tool's answer"))
        assert r["code"] == "CANCELLED" and r["messages"] == 3, r
        # The tool keeps its connection open meanwhile: only RST_STREAM can tell.
        ended_early(bed, before, f"{r['pod']} to end the cancelled 30 s stream")
    finally:
        if p.poll() is None:
            tell(p, "quit")
            p.wait(10)


def test_deadline_expires_as_deadline_exceeded_on_both_sides(bed):
    before = bed.server_stats()
    with bed.client(bed.clients[0], bed.echo) as c:
        t0 = time.monotonic()
        r = c.server_stream(600, delay_ms=50, rpc_timeout=1)
        took = time.monotonic() - t0
        assert r["errors"] == {"DEADLINE_EXCEEDED": 1}, f"1 s deadline: {short(r)}"
        assert took < 5, f"a 1 s deadline took {took:.1f} s to fire"
        ended_early(bed, before, "the server to end the stream whose deadline expired")
    # Without a client-side timer (raw HTTP/2, grpc-timeout only), the deadline
    # still fires: the header reached the server, or the splitter honoured it.
    before = bed.server_stats()
    req = os.path.join(bed.node.workdir, "deadline.grpc")
    body = b'{"count":600,"delay_ms":50}\n'
    with open(req, "wb") as f:
        f.write(b"\0" + len(body).to_bytes(4, "big") + body)
    t0 = time.monotonic()
    out = bed.clients[0].run(["nghttp", "-v", "-H", "content-type: application/grpc",
                              "-H", "te: trailers", "-H", "grpc-timeout: 1S", "-d", req,
                              f"http://{bed.echo.target4}/h2split.test.Echo/ServerStream"],
                             timeout=60, check=False)
    took = time.monotonic() - t0
    trailers = re.findall(r"recv \(stream_id=\d+\) (grpc-[a-z]+: .*)", out.stdout)
    assert "grpc-status: 4" in trailers, \
        f"raw h2 with grpc-timeout: 1S, after {took:.1f} s: trailers {trailers}\n" \
        f"{out.stdout[-1500:]}{out.stderr[-500:]}"
    assert took < 5, f"grpc-timeout: 1S fired after {took:.1f} s"
    ended_early(bed, before, "the server to end the raw stream whose grpc-timeout expired")


# ---------------------------------------------------------------- identity

def test_every_backend_sees_the_calling_pod_ip(bed):
    for pod in bed.clients:
        with bed.client(pod, bed.echo) as c:
            r = c.unary(60, concurrency=4)
        assert_all_ok(r, f"RPCs from {pod.name}")
        assert len(r["pods"]) == 3, f"RPCs from {pod.name} did not reach all pods: {r['pods']}"
        assert set(peer_ips(r)) == {pod.ip4}, \
            f"backends saw {pod.name}'s RPCs as coming from {peer_ips(r)}, want {pod.ip4}"


def test_dual_stack_service_keeps_the_family_the_client_dialled(bed):
    """As with kube-proxy: the IPv4 VIP reaches backends over IPv4 from the
    pod's IPv4 address, the IPv6 VIP over IPv6 from its IPv6 address."""
    pod = bed.clients[0]
    for family, want in ((4, pod.ip4), (6, pod.ip6)):
        with bed.client(pod, bed.dual, family=family) as c:
            r = c.unary(60, concurrency=4)
        assert_all_ok(r, f"RPCs to the IPv{family} VIP")
        assert set(peer_ips(r)) == {want}, \
            f"RPCs to the IPv{family} VIP reached backends from {peer_ips(r)}, want {want}"


def test_network_policy_stand_in_sees_the_pod_ip(bed):
    """Only client-0 may reach the servers' port: client-0's RPCs succeed and
    client-1's fail, through h2split exactly as through kube-proxy alone."""
    node, ok, denied = bed.node, bed.clients[0], bed.clients[1]
    port = str(testbed.GRPC_PORT)
    rules = [["-I", "FORWARD", "-p", "tcp", "--dport", port, "-d", s.ip4,
              "-j", "REJECT", "--reject-with", "tcp-reset"] for s in bed.servers]
    rules += [["-I", "FORWARD", "-p", "tcp", "--dport", port, "-s", ok.ip4, "-d", s.ip4,
               "-j", "ACCEPT"] for s in bed.servers]
    for r in rules:
        node.run(["iptables", "-w", *r])
    try:
        for svc in (bed.echo, bed.plain):
            via = "h2split" if svc is bed.echo else "kube-proxy only"
            # The denied pod first: its failures must not make h2split give up
            # on endpoints that the allowed pod can reach.
            with bed.client(denied, svc) as c:
                r = c.unary(6, rpc_timeout=5)
            assert r["ok"] == 0 and set(r["errors"]) == {"UNAVAILABLE"}, \
                f"{via}: client-1 is not allowed, yet: {short(r)}"
            with bed.client(ok, svc) as c:
                r = c.unary(30, rpc_timeout=5)
            log = bed.daemon.notable() if svc is bed.echo else ""
            assert r["ok"] == 30, f"{via}: client-0 is allowed, yet: {short(r)}\n{log}"
            assert set(peer_ips(r)) == {ok.ip4}, \
                f"{via}: client-0's RPCs reached backends from {peer_ips(r)}, want {ok.ip4}"
            if svc is bed.echo:  # (kube-proxy alone sends one channel to one pod)
                assert len(r["pods"]) == 3, \
                    f"{via}: client-1's denied connects made h2split avoid pods for " \
                    f"client-0: its 30 RPCs went to {r['pods']}\n{log}"
    finally:
        for r in rules:
            node.run(["iptables", "-w", "-D", *r[1:]], check=False)


# ---------------------------------------------------------------- no endpoint

@pytest.mark.parametrize("which", ["empty", "notready"])
def test_no_ready_endpoint_is_unavailable_at_once(bed, which):
    svc = bed.empty if which == "empty" else bed.notready
    with bed.client(bed.clients[0], svc) as c:
        t0 = time.monotonic()
        r = c.unary(1, rpc_timeout=10)
        took = time.monotonic() - t0
    assert r["errors"] == {"UNAVAILABLE": 1}, f"service {svc.name} without ready pods: {short(r)}"
    assert "h2split" in r["details"][0], \
        f"the UNAVAILABLE should say h2split answered it, got {r['details']}"
    assert took < 2, f"UNAVAILABLE took {took:.1f} s (want it at once, not a hang)"


# ---------------------------------------------------------------- other protocols

def test_plain_http2_through_the_splitter(bed):
    d, c = bed.daemon, bed.clients[0]
    before = d.metrics()
    url = f"http://{bed.h2web.vip4}:80"
    for name, data in bed.blobs.items():
        out = subprocess.run(c.argv(["nghttp", f"{url}/{name}"]), capture_output=True,
                             timeout=30, env=testbed.util.child_env())
        assert out.returncode == 0, f"nghttp {name}: {out.stderr[-800:]!r}"
        assert hashlib.sha256(out.stdout).hexdigest() == hashlib.sha256(data).hexdigest(), \
            f"nghttp {name}: got {len(out.stdout)} bytes, want {len(data)} (or content differs)"
    v = c.run(["nghttp", "-v", "-n", f"{url}/blob"], timeout=30).stdout
    assert re.search(r"recv .*:status: 200", v), f"nghttp -v: no :status 200:\n{v[-1500:]}"
    v = c.run(["nghttp", "-v", "-n", f"{url}/missing"], timeout=30, check=False).stdout
    assert re.search(r"recv .*:status: 404", v), f"nghttp -v /missing: no :status 404:\n{v[-1500:]}"
    h = c.run(["h2load", "-n", "100", "-c", "2", f"{url}/blob"], timeout=120).stdout
    assert re.search(r"requests: 100 total, 100 started, 100 done, 100 succeeded", h), h[-1500:]
    assert "status codes: 100 2xx" in h, h[-1500:]
    m = re.search(r"\((\d+)\) data", h)
    assert m and int(m[1]) == 100 * MIB, f"h2load data bytes: {m and m[1]}, want {100 * MIB}"
    after = d.metrics()
    streams = after.get("h2split_downstream_streams_total") - \
        before.get("h2split_downstream_streams_total")
    l4 = after.get("h2split_l4_connections_total") - before.get("h2split_l4_connections_total")
    assert streams >= 104, f"only {streams:g} streams went through the splitter (want >= 104)"
    assert l4 == 0, f"{l4:g} HTTP/2 connections took the L4 path"


def test_http11_takes_the_l4_path(bed):
    d, c = bed.daemon, bed.clients[0]
    before = d.metrics()
    out = subprocess.run(c.argv(["curl", "-sS", "--http1.1", "--max-time", "20",
                                 f"http://{bed.h1web.vip4}/blob"]),
                         capture_output=True, timeout=30, env=testbed.util.child_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout == bed.blobs["blob"], \
        f"curl --http1.1: got {len(out.stdout)} bytes, want {MIB} (or content differs)"
    after = d.metrics()
    l4 = after.get("h2split_l4_connections_total") - before.get("h2split_l4_connections_total")
    streams = after.get("h2split_downstream_streams_total") - \
        before.get("h2split_downstream_streams_total")
    assert l4 == 1, f"h2split_l4_connections_total grew by {l4:g}, want 1"
    assert streams == 0, f"an HTTP/1.1 request became {streams:g} HTTP/2 streams"


# ---------------------------------------------------------------- memory

def test_stalled_reader_keeps_daemon_memory_flat(bed):
    """A client that reads one 1 MiB message of 100 and stops: flow control
    holds the server back, h2splitd does not buffer the rest."""
    d = bed.daemon
    base = d.rss_kib()
    p = tool_proc(bed.clients[0], "stall", bed.echo.target4, 100, MIB)
    try:
        first = json.loads(p.next_line(30, "the stall tool's first message"))
        assert first["first"] == MIB, first
        samples, peak = [], base

        # The client's windows fill, then h2splitd stops sending to it. Were it
        # to keep reading the server meanwhile, the rest of the 100 MiB (a
        # second's work here) would land in its memory within this window.
        def settled():
            nonlocal peak
            peak = max(peak, d.rss_kib())
            samples.append((time.monotonic(), d.metrics().get("h2split_bytes_sent_total")))
            old = [b for t, b in samples if t <= samples[-1][0] - 2.0]
            return old and old[-1] == samples[-1][1] >= MIB
        testbed.wait_for(settled, 30, "h2splitd to stop sending to the stalled client")
        peak = max(peak, d.rss_kib())
        grew = peak - base
        if not testbed.sanitized():  # ASan's shadow and quarantine are no measure of ours
            assert grew < 32 * 1024, \
                f"h2splitd RSS grew {grew} KiB ({base} -> {peak}) while a reader stalled on " \
                "a 100 MiB stream"
        tell(p, "go")
        r = json.loads(p.next_line(120, "the stall tool's summary"))
        assert r["code"] == "OK" and r["messages"] == 100 and r["bytes"] == 100 * MIB, \
            f"after resuming, the stream did not complete: {r}"
    finally:
        if p.poll() is None:
            p.stop(2)


# ---------------------------------------------------------------- metrics

def test_metrics_agree_with_what_the_bed_did(bed):
    d, svc = bed.daemon, bed.metered
    label = f"{svc.namespace}/{svc.name}:{svc.port}"
    code, body = d.admin("/readyz")
    assert code == 200, f"/readyz answered {code} while running: {body}"
    before = d.metrics()
    with bed.client(bed.clients[0], svc) as c:
        r = c.unary(300, concurrency=4)
    assert_all_ok(r, "300 RPCs to the metered service")
    after = d.metrics()

    def delta(name, **labels):
        return after.get(name, **labels) - before.get(name, **labels)
    reqs = delta("h2split_endpoint_requests_total", service=label)
    assert reqs == 300, \
        f"h2split_endpoint_requests_total{{service={label!r}}} grew by {reqs:g}, want 300; " \
        f"rows: {after.rows('h2split_endpoint_requests_total', service=label)}"
    per_pod = {lab.get("pod"): v for lab, v in
               after.rows("h2split_endpoint_requests_total", service=label)}
    assert per_pod == {k: float(v) for k, v in r["pods"].items()}, \
        f"per-pod requests in metrics {per_pod} differ from what the client saw {r['pods']}"
    ok = delta("h2split_service_grpc_responses_total", service=label, grpc_status="0")
    assert ok == 300, f"grpc_status=\"0\" responses of {label} grew by {ok:g}, want 300"
    streams = delta("h2split_downstream_streams_total")
    assert streams == 300, f"h2split_downstream_streams_total grew by {streams:g}, want 300"
    assert after.get("h2split_ready") == 1, "h2split_ready is not 1 while running"


# ---------------------------------------------------------------- the tool

def _channel(target):
    import grpc
    return grpc.insecure_channel(target, options=[
        ("grpc.enable_http_proxy", 0), ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)])


def _md(md):
    return [[k, v.hex() if isinstance(v, bytes) else v] for k, v in md or ()]


def _tool_big(ch, echo):
    unary = ch.unary_unary(echo.path("Unary"))
    rpcs = []
    # Both directions at once (echo), around frame and window edges, up to 16 MiB.
    for size in (0, 1, 16383, 16384, 16385, 65535, 65536, 262145, MIB + 1, 16 * MIB):
        data = os.urandom(size)
        resp = unary(echo.encode({"echo": True}, data), timeout=120)
        hdr, body = echo.decode(resp)
        rpcs.append({"size": size, "dir": "both", "got": len(body), "req_bytes": hdr["req_bytes"],
                     "ok": body == data and hdr["req_bytes"] == size})
    # One way each: a 16 MiB response to a small request, and the reverse.
    resp = unary(echo.encode({"size": 16 * MIB}), timeout=120)
    hdr, body = echo.decode(resp)
    rpcs.append({"size": 16 * MIB, "dir": "down", "got": len(body),
                 "ok": body == b"x" * (16 * MIB)})
    resp = unary(echo.encode({}, b"y" * (16 * MIB)), timeout=120)
    hdr, body = echo.decode(resp)
    rpcs.append({"size": 16 * MIB, "dir": "up", "req_bytes": hdr["req_bytes"],
                 "ok": hdr["req_bytes"] == 16 * MIB})
    return {"rpcs": rpcs}


def _tool_pingpong(ch, echo, seconds):
    import queue
    q = queue.Queue()

    def requests():
        while True:
            item = q.get()
            if item is None:
                return
            yield echo.encode({"echo": True}, item)

    call = ch.stream_stream(echo.path("Bidi"))(requests(), timeout=seconds + 30)
    end = time.monotonic() + seconds
    rounds, bad, pods, peers, worst = 0, [], set(), set(), 0.0
    payload = os.urandom(7)
    q.put(payload)
    t = time.monotonic()
    for resp in call:
        worst = max(worst, time.monotonic() - t)
        hdr, body = echo.decode(resp)
        pods.add(hdr["pod"])
        peers.add(peer_addr(hdr["peer"])[0])
        if hdr["received"] != rounds + 1 or body != payload:
            bad.append({"round": rounds, "received": hdr["received"], "len": len(body)})
        rounds += 1
        if time.monotonic() >= end:
            q.put(None)
        else:
            payload = os.urandom((rounds * 997) % 40000)
            t = time.monotonic()
            q.put(payload)
    return {"code": call.code().name, "rounds": rounds, "bad": bad, "pods": sorted(pods),
            "peers": sorted(peers), "worst_ms": round(worst * 1000, 1)}


def _tool_metadata(ch, echo):
    import grpc
    sent = [("x-h2st-text", "hello, world"), ("x-h2st-multi", "one"), ("x-h2st-multi", "two"),
            ("x-h2st-long", "v" * 4000), ("x-h2st-raw-bin", bytes(range(256))),
            ("x-h2st-nul-bin", b"\0\0\xff\0"), ("x-h2st-empty-bin", b"")]
    out = {"sent": _md(sent)}
    _, call = ch.unary_unary(echo.path("Unary")).with_call(echo.encode({}), metadata=sent,
                                                           timeout=10)
    out["unary"] = {"initial": _md(call.initial_metadata()),
                    "trailers": _md(call.trailing_metadata())}
    try:
        ch.unary_unary(echo.path("Unary"))(echo.encode({"status": 10, "message":
                                                         "with trailers"}),
                                           metadata=sent, timeout=10)
        out["error"] = {"code": "OK"}
    except grpc.RpcError as e:
        out["error"] = {"code": e.code().name, "details": e.details(),
                        "initial": _md(e.initial_metadata()),
                        "trailers": _md(e.trailing_metadata())}
    it = ch.unary_stream(echo.path("ServerStream"))(echo.encode({"count": 5}), metadata=sent,
                                                     timeout=10)
    n = sum(1 for _ in it)
    out["stream"] = {"messages": n, "initial": _md(it.initial_metadata()),
                     "trailers": _md(it.trailing_metadata())}
    return out


def _tool_main(argv):
    import grpc
    from testbed import echo
    mode, target = argv[0], argv[1]
    ch = _channel(target)
    if mode == "big":
        out = _tool_big(ch, echo)
    elif mode == "pingpong":
        out = _tool_pingpong(ch, echo, float(argv[2]))
    elif mode == "metadata":
        out = _tool_metadata(ch, echo)
    elif mode == "cancel":
        # Cancel a long stream after 3 messages, then keep the connection open
        # until told: only the RST_STREAM can tell the server.
        call = ch.unary_stream(echo.path("ServerStream"))(
            echo.encode({"count": 600, "delay_ms": 50}), timeout=60)
        got = []
        for m in call:
            got.append(echo.decode(m)[0])
            if len(got) == 3:
                break
        call.cancel()
        print(json.dumps({"pod": got[0]["pod"], "messages": len(got),
                          "code": call.code().name}), flush=True)
        sys.stdin.readline()
        out = {"done": True}
    elif mode == "stall":
        count, size = int(argv[2]), int(argv[3])
        call = ch.unary_stream(echo.path("ServerStream"))(
            echo.encode({"count": count, "size": size}), timeout=300)
        hdr, body = echo.decode(next(call))
        print(json.dumps({"first": len(body), "pod": hdr["pod"]}), flush=True)
        sys.stdin.readline()  # stalled: read nothing until told
        n, nbytes = 1, len(body)
        try:
            for m in call:
                n += 1
                nbytes += len(echo.decode(m)[1])
            code = "OK"
        except grpc.RpcError as e:
            code = e.code().name
        out = {"code": code, "messages": n, "bytes": nbytes}
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(out), flush=True)
    ch.close()
    os._exit(0)


if __name__ == "__main__":
    _tool_main(sys.argv[1:])
