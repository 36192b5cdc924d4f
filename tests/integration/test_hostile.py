# SPDX-License-Identifier: Apache-2.0
"""Hostile HTTP/2 clients against h2splitd on the simulated node.

A client pod ("attacker") dials the ClusterIP of an opted-in Service, so
BPF redirects it to h2splitd, and speaks raw HTTP/2 (h2raw.py): rapid
reset, CONTINUATION / SETTINGS / PING floods, zero windows, a client that
never reads, slowloris, an HPACK bomb, stream-id exhaustion, invalid frames
and a bad preface. For each attack the test checks what a user of the node
cares about:
- the attacker's connection ends (or its stream is refused) with the
  HTTP/2 error code RFC 9113 asks for;
- h2splitd's CPU time and RSS during the attack stay bounded, its downstream
  connections and fds go back to where they were, and it is idle afterwards;
- a well-behaved gRPC client in another pod (same Service, same daemon)
  sees no failure while it happens.
The daemon runs with its default limits; test_limits.py runs each limit at a
small setting (--header-timeout among them).
"""

import contextlib
import json
import os
import re
import subprocess
import threading
import time

import pytest

import testbed
import h2raw

HERE = os.path.dirname(os.path.abspath(__file__))
H2RAW = os.path.join(HERE, "h2raw.py")
PORT = 50051
ECHO_PORT = 9000
ADMIN = "http://127.0.0.1:9901"
STREAM_WINDOW = 256 * 1024  # --max-pending-bytes default
RESET_BURST = 1000          # H2_DS_RESET_BURST
WORKERS = 2                 # the bed's h2splitd --workers


class Usage:
    """CPU time, RSS and open fds of one process, from /proc."""

    def __init__(self, pid):
        self.pid = pid
        self.tick = os.sysconf("SC_CLK_TCK")

    def cpu_s(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime

    def rss_kib(self):
        with open(f"/proc/{self.pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))


class Monitor:
    """Samples the daemon every 50 ms while an attack runs: CPU seconds used,
    peak RSS growth, fds at start."""

    def __init__(self, usage):
        self.u = usage
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(0.05):
            try:
                self.peak_rss = max(self.peak_rss, self.u.rss_kib())
            except OSError:
                return

    def __enter__(self):
        self.cpu0, self.rss0, self.fds0 = self.u.cpu_s(), self.u.rss_kib(), self.u.fds()
        self.peak_rss = self.rss0
        self.t0 = time.monotonic()
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.cpu = self.u.cpu_s() - self.cpu0
        self.wall = time.monotonic() - self.t0
        self.rss_growth_mib = (self.peak_rss - self.rss0) / 1024
        return False

    def __repr__(self):
        return (f"cpu={self.cpu:.2f}s wall={self.wall:.1f}s "
                f"rss_growth={self.rss_growth_mib:.1f}MiB fds0={self.fds0}")


class GoodTraffic:
    """A well-behaved gRPC client in its own pod: ServerStream RPCs (one
    response after 50 ms, 5 s deadline each) back to back on ONE channel
    through h2splitd, for the whole module. (ServerStream, so the backends'
    Unary counters only ever count what attackers got through.)"""

    def __init__(self, client):
        self.c = client
        self.lock = threading.Lock()
        self.rpcs = self.ok = 0
        self.errors = {}
        self.details = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            r = self.c.server_stream(1, timeout=30, rpc_timeout=5, delay_ms=50)
            with self.lock:
                self.rpcs += r["n"]
                self.ok += r["ok"]
                for k, v in r["errors"].items():
                    self.errors[k] = self.errors.get(k, 0) + v
                self.details += r["details"][:3]

    def mark(self):
        with self.lock:
            return self.rpcs, self.ok, dict(self.errors)

    def since(self, mark, more=2, timeout=30):
        """(rpcs, ok, errors) since ``mark``, once ``more`` RPCs completed after now."""
        now = self.mark()[0]
        testbed.wait_for(lambda: self.mark()[0] >= now + more, timeout,
                         "the good client to complete RPCs after the attack")
        rpcs, ok, errors = self.mark()
        errs = {k: v - mark[2].get(k, 0) for k, v in errors.items() if v != mark[2].get(k, 0)}
        return rpcs - mark[0], ok - mark[1], errs

    def stop(self):
        self._stop.set()
        self._t.join(40)


class Bed:
    """Two gRPC backends behind Service "echo", a TCP echo pod behind Service
    "raw", a silent HTTP/2 pod behind Service "sink" (all opted in), an
    attacker pod, a good client pod, h2splitd."""

    def __init__(self, node, build_dir, extra_args=()):
        self.node = node
        self.servers = node.add_server_pods(["server-0", "server-1"])
        self.echo = node.add_service("echo", PORT, pods=self.servers)
        self.raw_pod = node.add_pod("raw-0")
        self.raw_server = self.raw_pod.popen([testbed.python(), "-u", H2RAW, "echo", "--port",
                                              str(ECHO_PORT)], name="echo", watch=True)
        self.raw_server.wait_line("ready", 15)
        self.raw = node.add_service("raw", ECHO_PORT, pods=[self.raw_pod], port_name="raw")
        # An HTTP/2 backend that reads everything and answers nothing (not even
        # SETTINGS): whatever the daemon sends it is held by flow control.
        self.sink_pod = node.add_pod("sink-0")
        self.sink_pod.popen([testbed.python(), "-u", H2RAW, "serve", "silent", "--port",
                             str(PORT)], name="sink", watch=True).wait_line("ready", 15)
        self.sink = node.add_service("sink", PORT, pods=[self.sink_pod])
        self.attacker = node.add_pod("attacker")
        self.good_pod = node.add_pod("good-0")
        self.daemon = node.popen([os.path.join(build_dir, "h2splitd"), *node.daemon_args(),
                                  "--listen", "169.254.20.11:15001", "--workers", str(WORKERS),
                                  "--log-level", "info", *extra_args],
                                 name="h2splitd", watch=True, stderr=subprocess.STDOUT)
        self.daemon.wait_line(r"msg=redirecting", 20)
        self.usage = Usage(self.daemon.pid)
        c = self.good_pod.grpc_client(self.echo.target4)
        r = c.server_stream(1, rpc_timeout=5)
        assert r["ok"] == 1, r
        self.good = GoodTraffic(c)
        self.backend_clients = {s.name: node.grpc_client(f"{s.ip4}:{PORT}") for s in self.servers}

    def attack(self, name, *args, timeout=90, host=None, port=PORT):
        r = self.attacker.run([testbed.python(), H2RAW, "attack", name, host or self.echo.vip4,
                               str(port), *map(str, args)], timeout=timeout, check=False)
        assert r.returncode == 0, f"h2raw attack {name} failed:\n{r.stdout}\n{r.stderr}"
        return json.loads(r.stdout.strip().splitlines()[-1])

    def metrics(self):
        r = self.node.run(["curl", "-s", "--max-time", "5", ADMIN + "/metrics"], check=False)
        out = {}
        for line in r.stdout.splitlines():
            m = re.match(r"^(h2split_[a-z_0-9]+) (\d+)$", line)
            if m:
                out[m.group(1)] = int(m.group(2))
        return out

    def limits(self):
        """h2split_limit_exceeded_total by limit."""
        r = self.node.run(["curl", "-s", "--max-time", "5", ADMIN + "/metrics"], check=False)
        return {m.group(1): int(m.group(2)) for m in re.finditer(
            r'^h2split_limit_exceeded_total\{limit="([a-z_]+)"\} (\d+)$', r.stdout, re.M)}

    def fds_not_upstream(self):
        """Open fds minus pooled upstream connections (which idle up to 60 s)."""
        return self.usage.fds() - self.metrics().get("h2split_upstream_connections_active", 0)

    def backend_unary(self):
        """Unary RPCs the backends have started, summed (only attackers send Unary)."""
        return sum(c.stats()["counts"]["Unary"] for c in self.backend_clients.values())

    def backend_active(self):
        return sum(c.stats()["active"] for c in self.backend_clients.values())

    def log_tail(self, pattern=None, n=15):
        lines = [ln for ln in self.daemon.lines if not pattern or re.search(pattern, ln)]
        return "\n".join(lines[-n:])


@pytest.fixture(scope="module")
def bed(module_node, build_dir):
    b = Bed(module_node, build_dir)
    yield b
    b.good.stop()


@contextlib.contextmanager
def attack_window(bed, max_cpu_s, max_rss_mib):
    """Run the body as an attack: afterwards the daemon must be alive, have used
    at most ``max_cpu_s`` CPU and ``max_rss_mib`` more RSS, be idle again,
    have closed the attacker's connections, and the good client must have
    seen no error."""
    mark = bed.good.mark()
    base = bed.metrics()
    fds0 = bed.fds_not_upstream()
    with Monitor(bed.usage) as m:
        yield m
    assert bed.daemon.poll() is None, f"h2splitd died\n{bed.daemon.log_tail()}"
    rpcs, ok, errors = bed.good.since(mark)
    assert not errors and ok == rpcs, \
        f"good client failed during the attack: {errors} {bed.good.details[-3:]}"
    if not testbed.sanitized():  # ASan is slower and its quarantine keeps freed memory
        assert m.cpu <= max_cpu_s, f"daemon CPU during the attack: {m}"
        assert m.rss_growth_mib <= max_rss_mib, f"daemon RSS during the attack: {m}"
    want = base.get("h2split_downstream_connections_active", 1)
    testbed.wait_for(lambda: bed.metrics().get("h2split_downstream_connections_active") <= want,
                     15, "the attacker's downstream connections to close")
    # Pooled upstream connections may idle for up to 60 s (H2_UPSTREAM_IDLE_MS);
    # every other fd the attack made must be gone.
    testbed.wait_for(lambda: bed.fds_not_upstream() <= fds0 + 2, 15,
                     f"daemon fds other than upstream connections to go back to {fds0}")

    def idle():
        c0 = bed.usage.cpu_s()
        time.sleep(0.5)  # a measurement window, not a synchronisation
        return bed.usage.cpu_s() - c0 < 0.1
    testbed.wait_for(idle, 10, "the daemon to be idle after the attack")
    after = bed.metrics()
    assert after.get("h2split_splitter_unexpected_total", 0) == \
        base.get("h2split_splitter_unexpected_total", 0), "a should-not-happen branch ran"


def goaway_code(r):
    return r["goaway"]["code"] if r.get("goaway") else None


# ---- rapid reset (CVE-2023-44487) ------------------------------------------------

_rapid = {}


def run_rapid_reset(bed):
    """10 connections, each sending HEADERS+DATA+RST_STREAM(CANCEL) as fast as it
    can (up to 20000 streams per connection). The outcome is kept even when
    attack_window fails, so each test still checks its own part of it."""
    def outcome():
        m1, l1 = bed.metrics(), bed.limits()
        _rapid.update(runs=r["runs"], reached=bed.backend_unary() - before,
                      streams=m1["h2split_downstream_streams_total"] -
                      m0["h2split_downstream_streams_total"],
                      upstream_conns=m1["h2split_upstream_connections_total"] -
                      m0["h2split_upstream_connections_total"],
                      limits={k: v - l0.get(k, 0) for k, v in l1.items()
                              if v != l0.get(k, 0)})

    if not _rapid:
        before, m0, l0 = bed.backend_unary(), bed.metrics(), bed.limits()
        with attack_window(bed, max_cpu_s=5.0, max_rss_mib=32) as m:
            r = bed.attack("rapid-reset", "--n", 20000, "--connections", 10, "--seconds", 10)
            outcome()
        outcome()  # again, now that the daemon is idle: late arrivals count too
        print(f"rapid reset: {m}; streams the daemon accepted: {_rapid['streams']}; "
              f"upstream connections opened: {_rapid['upstream_conns']}; requests that "
              f"reached backends: {_rapid['reached']}; limits hit: {_rapid['limits']}")
    return _rapid


def test_rapid_reset_is_cut_off(bed):
    """Each connection gets GOAWAY(ENHANCE_YOUR_CALM), RFC 9113's code for
    excessive load, and is closed within a fraction of a second; the daemon's
    CPU and memory stay bounded and the good client is unaffected
    (attack_window); and no reset request reaches a backend."""
    rr = run_rapid_reset(bed)
    for run in rr["runs"]:
        assert run["end"] in ("eof", "reset"), run
        assert goaway_code(run) == "ENHANCE_YOUR_CALM", run
        assert run["goaway"]["last_stream_id"] <= 2 * (RESET_BURST + 100) + 1, run
        assert run["closed_after_s"] < 5, run
    assert rr["reached"] == 0, rr


def test_rapid_reset_stops_at_the_reset_burst(bed):
    rr = run_rapid_reset(bed)
    assert rr["streams"] <= len(rr["runs"]) * (RESET_BURST + 100), rr


def test_rapid_reset_is_counted_as_a_limit(bed):
    """Every attacking connection ends at the reset budget, and
    h2split_limit_exceeded_total says so: reset_rate once per connection, and
    no other limit."""
    rr = run_rapid_reset(bed)
    assert rr["limits"] == {"reset_rate": len(rr["runs"])}, rr["limits"]


def test_rapid_reset_opens_no_upstream_connection_per_stream(bed):
    """A stream routed before its RST_STREAM was read (a short read splits the
    two) goes over the attacker pod's pooled connection to its endpoint: at
    most one per endpoint on each worker, however many streams were reset."""
    rr = run_rapid_reset(bed)
    assert rr["upstream_conns"] <= WORKERS * len(bed.servers), rr


# ---- floods that nghttp2 ends as fatal errors -------------------------------------

FLOODS = {
    "continuation-flood": ("--n", 200000),
    "settings-flood": ("--n", 500000),
    "ping-flood": ("--n", 500000),
}
_flood_runs = {}


def run_flood(bed, name):
    if name not in _flood_runs:
        before = bed.limits()
        with attack_window(bed, max_cpu_s=3.0, max_rss_mib=16) as m:
            r = bed.attack(name, *FLOODS[name], "--seconds", 10)
        after = bed.limits()
        r["limits"] = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
        print(f"{name}: {m}; {r}")
        _flood_runs[name] = (r, m, bed.log_tail(r"h2_protocol_error", 3))
    return _flood_runs[name]


@pytest.mark.parametrize("name", sorted(FLOODS))
def test_flood_is_cut_off_quickly(bed, name):
    r, m, _ = run_flood(bed, name)
    assert r["end"] in ("eof", "reset"), r
    assert r["closed_after_s"] < 5, r


@pytest.mark.parametrize("name", sorted(FLOODS))
def test_flood_is_answered_with_enhance_your_calm(bed, name):
    """nghttp2 gives up on such a session without a word (a fatal receive
    error); the daemon then writes GOAWAY(ENHANCE_YOUR_CALM) itself."""
    r, _, log = run_flood(bed, name)
    assert goaway_code(r) == "ENHANCE_YOUR_CALM", f"{r}\ndaemon log:\n{log}"


# Which limit each flood runs into first (h2split_limit_exceeded_total{limit}).
FLOOD_LIMITS = {
    "continuation-flood": {"continuations"},
    "settings-flood": {"outbound_control_frames", "control_frame_rate"},
    "ping-flood": {"outbound_control_frames", "control_frame_rate"},
}


@pytest.mark.parametrize("name", sorted(FLOODS))
def test_flood_is_counted_as_a_limit(bed, name):
    r, _, _ = run_flood(bed, name)
    assert len(r["limits"]) == 1 and set(r["limits"]) <= FLOOD_LIMITS[name], r["limits"]
    limit = next(iter(r["limits"]))
    testbed.wait_for(
        lambda: bed.log_tail(rf"limit_exceeded limit={limit} client=\S*{bed.attacker.ip4}", 1),
        10, f"the daemon to log limit_exceeded limit={limit} for the attacker")


# ---- flow control: a client that takes nothing ---------------------------------------

@pytest.mark.parametrize("how", ["zero-window", "never-read"])
def test_client_that_takes_nothing_holds_at_most_its_windows(bed, how):
    """64 ServerStream RPCs of 64 x 64 KiB each (256 MiB asked for) from a client
    with SETTINGS_INITIAL_WINDOW_SIZE 0 that never sends WINDOW_UPDATE, or with
    huge windows that never reads its socket: the daemon holds at most one
    stream window (256 KiB) per stream, the backends are flow-controlled, and
    when the client goes away the upstream streams are cancelled."""
    streams = 64
    limit_mib = streams * STREAM_WINDOW / (1 << 20) + 16
    with attack_window(bed, max_cpu_s=3.0, max_rss_mib=limit_mib) as m:
        p = bed.attacker.popen([testbed.python(), "-u", H2RAW, "attack", how, bed.echo.vip4,
                                str(PORT), "--streams", streams, "--n", 64, "--seconds", 6],
                               name=how, watch=True)
        p.wait_line("holding", 15)
        testbed.wait_for(lambda: bed.backend_active() >= streams, 15,
                         f"{streams} ServerStream RPCs to reach the backends")
        r = json.loads(p.wait_line(r'"attack"', 30))
        assert p.wait(10) == 0
    print(f"{how}: {m}; {r}")
    if how == "zero-window":
        assert r["data_bytes"] == 0, r  # not one byte past a window of 0
    # The good client keeps one RPC of its own in flight most of the time.
    testbed.wait_for(lambda: bed.backend_active() <= 1, 15,
                     "the backends' streams to be cancelled once the client left")


# ---- slowloris -------------------------------------------------------------------------

def test_slowloris_preface_goes_to_the_l4_path(bed):
    """A preface that takes longer than the sniff timeout (1 s) is not HTTP/2 as
    far as the daemon knows: the connection is handed to the L4 path with the
    bytes so far, and the backend itself answers (as without h2split)."""
    with attack_window(bed, max_cpu_s=1.0, max_rss_mib=8):
        r = bed.attack("slowloris", "--streams", 10, "--trickle", "preface", "--pause-ms", 60,
                       "--seconds", 10)
    assert r["answered_by"] == {"backend": 10}, r
    assert r["statuses"] == {"200": 10}, r


def test_slowloris_request_costs_little_and_completes(bed):
    """50 connections trickle SETTINGS + HEADERS + DATA one byte every 20 ms
    (~4 s): the daemon spends next to no CPU or memory on them, serves the good
    client meanwhile, and answers each once its request is complete: each
    header block completes well within --header-timeout (30 s by default;
    test_limits.py shows the timeout itself)."""
    with attack_window(bed, max_cpu_s=2.0, max_rss_mib=16) as m:
        r = bed.attack("slowloris", "--streams", 50, "--trickle", "request", "--pause-ms", 20,
                       "--seconds", 10)
    print(f"slowloris: {m}; {r}")
    assert r["answered_by"] == {"h2splitd": 50}, r
    assert r["statuses"] == {"200": 50}, r


# ---- HPACK bomb --------------------------------------------------------------------------

def test_hpack_bomb_is_refused_per_stream(bed):
    """A 4 KiB header indexed once, then referenced 16000 times per HEADERS
    (~64 MiB of header list per 16 KiB frame), on 200 streams: every stream is
    refused with RST_STREAM at the 64 KiB header list limit, none reaches a
    backend, the HPACK context stays usable (an honest request on the same
    connection succeeds), and memory stays flat."""
    before = bed.backend_unary()
    with attack_window(bed, max_cpu_s=3.0, max_rss_mib=16) as m:
        r = bed.attack("hpack-bomb", "--streams", 200, "--seconds", 10)
    print(f"hpack bomb: {m}; {r}")
    assert sum(r["rst"].values()) == 200, r
    assert set(r["rst"]) <= {"INTERNAL_ERROR", "REFUSED_STREAM", "ENHANCE_YOUR_CALM",
                             "PROTOCOL_ERROR"}, r
    assert r["honest_status"] == "200", r
    assert bed.backend_unary() - before == 1, "a bomb stream reached a backend"


# ---- stream ids --------------------------------------------------------------------------

def test_stream_id_exhaustion(bed):
    """The last client stream id (2^31-1) works; after it no stream can be
    opened: a HEADERS on a lower id (5, which the client skipped) is a
    connection error PROTOCOL_ERROR (RFC 9113 5.1.1; nghttp2 alone would
    ignore it, h2splitd checks before it), so neither it nor 2^31+1 (reserved
    bit set, i.e. id 1 again) gets a response or reaches a backend."""
    before = bed.backend_unary()
    with attack_window(bed, max_cpu_s=1.0, max_rss_mib=8):
        r = bed.attack("stream-ids", "--seconds", 5)
    assert r["top_stream_status"] == "200", r
    assert r["answered_after_top"] == [], r
    assert goaway_code(r) == "PROTOCOL_ERROR" and r["end"] in ("eof", "reset"), r
    assert r["goaway"]["last_stream_id"] == h2raw.MAX_STREAM_ID, r
    assert bed.backend_unary() - before == 1, "a stream opened after 2^31-1 reached a backend"


# ---- routing cannot be steered from inside the request ---------------------------------

@pytest.mark.parametrize("authority", ["sink", "sink.default.svc.cluster.local:50051", "SINK-VIP"])
def test_authority_does_not_choose_the_backend(bed, authority):
    """The Service a stream goes to is the one BPF recorded for the connection
    (the ClusterIP the app dialled), never :authority or host: a request to
    echo's VIP that names the sink Service (by name or ClusterIP) is still
    served by an echo backend."""
    authority = authority.replace("SINK-VIP", f"{bed.sink.vip4}:{PORT}")
    before = bed.backend_unary()
    r = bed.attack("request", "--authority", authority, "--seconds", 5)
    assert r["status"] == "200", r
    assert bed.backend_unary() - before == 1, "not served by an echo backend"


# ---- invalid frames ----------------------------------------------------------------------

# case -> (acceptable outcomes, error code). "goaway": a connection error;
# "rst": a stream error (RST_STREAM) with the connection left open.
INVALID = {
    "data-on-stream-0": ({"goaway"}, "PROTOCOL_ERROR"),
    "headers-on-stream-0": ({"goaway"}, "PROTOCOL_ERROR"),
    "even-stream-id": ({"goaway"}, "PROTOCOL_ERROR"),
    "oversized-frame": ({"goaway"}, "FRAME_SIZE_ERROR"),
    "ping-wrong-length": ({"goaway"}, "FRAME_SIZE_ERROR"),
    "settings-wrong-length": ({"goaway"}, "FRAME_SIZE_ERROR"),
    "settings-ack-with-payload": ({"goaway"}, "FRAME_SIZE_ERROR"),
    "settings-enable-push-2": ({"goaway"}, "PROTOCOL_ERROR"),
    "settings-window-too-big": ({"goaway"}, "FLOW_CONTROL_ERROR"),
    "settings-max-frame-too-small": ({"goaway"}, "PROTOCOL_ERROR"),
    "window-update-zero": ({"goaway"}, "PROTOCOL_ERROR"),
    "window-update-overflow": ({"goaway"}, "FLOW_CONTROL_ERROR"),
    "window-update-overflow-stream": ({"rst", "goaway"}, "FLOW_CONTROL_ERROR"),
    "data-exceeds-window": ({"rst", "goaway"}, "FLOW_CONTROL_ERROR"),
    "hpack-bad-index": ({"goaway"}, "COMPRESSION_ERROR"),
    "hpack-truncated": ({"goaway"}, "COMPRESSION_ERROR"),
    "continuation-without-headers": ({"goaway"}, "PROTOCOL_ERROR"),
    "headers-then-other-frame": ({"goaway"}, "PROTOCOL_ERROR"),
    "push-promise-from-client": ({"goaway"}, "PROTOCOL_ERROR"),
    "rst-on-idle-stream": ({"goaway"}, "PROTOCOL_ERROR"),
    "data-on-idle-stream": ({"goaway"}, "PROTOCOL_ERROR"),
    "data-after-end-stream": ({"rst", "goaway"}, "STREAM_CLOSED"),
    "priority-self-dependency": ({"rst", "goaway"}, "PROTOCOL_ERROR"),
    "uppercase-header-name": ({"rst"}, "PROTOCOL_ERROR"),
    "connection-header": ({"rst"}, "PROTOCOL_ERROR"),
    "missing-method": ({"rst"}, "PROTOCOL_ERROR"),
    "content-length-mismatch": ({"rst"}, "PROTOCOL_ERROR"),
    "first-frame-not-settings": ({"goaway"}, "PROTOCOL_ERROR"),
    "headers-lower-stream-id": ({"goaway"}, "PROTOCOL_ERROR"),
    "trailers-lower-open-stream": ({"alive"}, None),
    "unknown-frame-type": ({"alive"}, None),  # RFC 9113 5.5: ignored
}
# Malformed requests (RFC 9113 8.1.1) must never be forwarded to a backend.
MALFORMED = ("uppercase-header-name", "connection-header", "missing-method")
# Sent to the "sink" service, whose backend never opens its window: the
# daemon cannot pass the body on, so the client's excess is deterministic; and
# it never answers, so no backend's reset can hide whether a connection lived.
TO_SINK = ("data-exceeds-window", "trailers-lower-open-stream")
_invalid = {}


@pytest.fixture(scope="module")
def invalid_results(bed):
    with attack_window(bed, max_cpu_s=3.0, max_rss_mib=16):
        before = bed.backend_unary()
        r = bed.attack("invalid", "--case", ",".join(MALFORMED), "--seconds", 3)
        _invalid["malformed_forwarded"] = bed.backend_unary() - before
        _invalid.update(r["cases"])
        r = bed.attack("invalid", "--case", ",".join(TO_SINK), "--seconds", 3,
                       host=bed.sink.vip4)
        _invalid.update(r["cases"])
        rest = [c for c in INVALID if c not in MALFORMED + TO_SINK]
        r = bed.attack("invalid", "--case", ",".join(rest), "--seconds", 3)
        _invalid.update(r["cases"])
    return _invalid


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_frames(invalid_results, case):
    r = invalid_results[case]
    kinds, code = INVALID[case]
    if r["goaway"]:
        got = ("goaway", r["goaway"]["code"])
        assert r["end"] in ("eof", "reset"), f"GOAWAY but the connection stayed open: {r}"
    elif r["rst"]:
        got = ("rst", next(iter(r["rst"])))
        assert r["end"] is None, f"a stream error closed the connection: {r}"
    else:
        got = ("alive", None) if r["ping_ack"] and r["end"] is None else ("nothing", r["end"])
    assert got[0] in kinds and got[1] == code, f"want {kinds} {code}, got {got}: {r}"


def test_malformed_requests_never_reach_a_backend(invalid_results):
    assert invalid_results["malformed_forwarded"] == 0


# ---- not HTTP/2 at all: the L4 path --------------------------------------------------------

BAD_PREFACES = {
    "http1": (b"GET / HTTP/1.1\r\nHost: raw\r\n\r\n" + bytes(range(256)), 0, 0),
    "preface-diverges": (b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + b"\x00\x01\xff" * 50, 0, 0),
    "preface-then-silence": (h2raw.PREFACE[:10] + b"-not-the-rest\r\n\r\n" + b"\xfe" * 100,
                             10, 1500),
}


@pytest.mark.parametrize("case", sorted(BAD_PREFACES))
def test_bad_preface_is_forwarded_byte_for_byte(bed, case):
    """A redirected connection that does not start with the HTTP/2 client
    preface (or stops half way for longer than the sniff timeout) goes to the
    original destination untouched: the echo pod returns exactly what was sent,
    and sees the client pod's own address."""
    payload, split, pause = BAD_PREFACES[case]
    with attack_window(bed, max_cpu_s=1.0, max_rss_mib=8):
        r = bed.attacker.run([testbed.python(), H2RAW, "send-raw", bed.raw.vip4, str(ECHO_PORT),
                              payload.hex(), "--split", str(split), "--pause-ms", str(pause),
                              "--seconds", "5"], timeout=30)
        out = json.loads(r.stdout)
    assert bytes.fromhex(out["got"]) == payload
    line = bed.raw_server.wait_line(r'"echoed"', 10)
    assert json.loads(line)["peer"].endswith(bed.attacker.ip4), line
