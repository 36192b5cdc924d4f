# SPDX-License-Identifier: Apache-2.0
"""Adoption of established connections: a gRPC channel that a pod opened
before h2splitd ran (or before its Service opted in) is closed by h2splitd
while idle (sock_diag SOCK_DESTROY in the pod's netns), the app reconnects
through the redirect, and its RPCs spread over every pod without a restart.
Real grpcio and grpc-go clients; what they lose is counted, and what must
never be touched (another Service, an excluded pod, the node) is checked by
its source port staying the same.

Every figure is waited for through what the daemon or the client reports
(metrics, log lines, RPCs per pod), never through time. The adoption time
(h2splitd start -> an RPC of the old channel reached every pod) is printed
with ``-s`` as ``ADOPT ...`` lines.
"""

import json
import os
import re
import signal
import subprocess
import time

import pytest

import testbed
from testbed.go_build import go_client

ADMIN = "http://127.0.0.1:9901"
LISTEN = "169.254.20.11:15001"
PACE_MS = 10
SERVERS = ["server-0", "server-1", "server-2"]
SPREAD_TIMEOUT = 20


def admin(node, path):
    r = node.run(["curl", "-sS", "--max-time", "5", ADMIN + path], check=False)
    return r.stdout


def metric(node, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in admin(node, "/metrics").splitlines():
        if labels and line.startswith(f"{name}{{{want}}} "):
            return float(line.split()[-1])
        if not labels and line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def adopted(node, result="idle"):
    return metric(node, "h2split_adopted_connections_total", result=result) or 0


def sports(place, dst):
    """Source ports of the place's established TCP connections to ``dst``."""
    out = place.run(["ss", "-Htn", "state", "established", "dst", dst]).stdout
    return sorted(int(line.split()[2].rpartition(":")[2]) for line in out.splitlines() if line)


def rx_bytes(place, dst):
    out = place.run(["ss", "-Htni", "state", "established", "dst", dst]).stdout
    m = re.search(r"bytes_received:(\d+)", out)
    return int(m.group(1)) if m else 0


def wait_streaming(place, dst):
    """Wait until data keeps arriving on the place's connection to ``dst``."""
    seen = []

    def flowing():
        seen.append(rx_bytes(place, dst))
        return len(seen) > 5 and seen[-1] > seen[-5] > 0
    testbed.wait_for(flowing, 15, f"server streams to flow on the connection to {dst}",
                     interval=0.02)


def start_daemon(node, build_dir, *extra, name="h2splitd"):
    d = node.popen([os.path.join(build_dir, "h2splitd"), *node.daemon_args(),
                    "--log-level", "info", *extra], name=name, watch=True,
                   stderr=subprocess.STDOUT)
    d.wait_line(r"msg=redirecting", 30)
    node.wait_applied()
    return d


class LineClient:
    """A client process that prints its summary so far as JSON lines: the
    grpc-go client (testbed/go_client) or the plain grpcio one
    (testbed.grpc_loop); one channel, an RPC every ``pace_ms``."""

    def __init__(self, place, argv, name):
        self.place = place
        self.proc = place.popen(argv, name=name, watch=True)
        self.proc.wait_line(r'^\{"ready"', 30)

    def progress(self):
        def last():
            for line in reversed(self.proc.lines):
                if line.startswith('{"n"'):
                    try:
                        return json.loads(line)
                    except ValueError:  # a line cut short as the process ends
                        continue
            return None
        return testbed.wait_for(last, 10, "the grpc-go client's first summary")

    def wait_progress(self, more, timeout=60, key="n"):
        start = self.progress()[key]
        return testbed.wait_for(lambda: (p := self.progress())[key] >= start + more and p,
                                timeout, f"{self.proc.name} to run {more} more RPCs ({key})")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        return self.progress()


class PyClient:
    """A grpcio channel (testbed.grpc_client) with its RPC loop running."""

    def __init__(self, place, target, pace_ms=PACE_MS):
        self.place = place
        self.c = place.grpc_client(target)
        self.job = self.c.loop(pace_ms)

    def progress(self):
        return self.c.progress()

    def wait_progress(self, more, timeout=60, key="n"):
        start = self.progress()[key]
        return testbed.wait_for(lambda: (p := self.progress())[key] >= start + more and p,
                                timeout, f"the grpcio channel to run {more} more RPCs ({key})")

    def stop(self):
        return self.c.stop_loop(self.job)


def open_client(kind, place, target, build_dir, pace_ms=PACE_MS):
    """grpc-go; grpcio as most apps use it (no connectivity watcher); or
    grpcio-watch: testbed.grpc_client, which subscribes to connectivity."""
    if kind == "grpc-go":
        return LineClient(place, [go_client(build_dir), "-target", target,
                                  "-pace-ms", str(pace_ms)], "go-client")
    if kind in ("grpcio", "grpcio-retry", "grpcio-wait-for-ready"):
        extra = {"grpcio-retry": ["--retry"],
                 "grpcio-wait-for-ready": ["--wait-for-ready"]}.get(kind, [])
        return LineClient(place, [testbed.python(), "-m", "testbed.grpc_loop", "--target",
                                  target, "--pace-ms", str(pace_ms), *extra], kind)
    return PyClient(place, target, pace_ms)


def wait_spread(client, t0, what):
    """Wait until RPCs made after now reach every server pod; the seconds
    since ``t0`` (monotonic) when they did."""
    base = dict(client.progress()["pods"])

    def spread():
        pods = client.progress()["pods"]
        return all(pods.get(p, 0) > base.get(p, 0) for p in SERVERS)
    testbed.wait_for(spread, SPREAD_TIMEOUT, f"{what}: RPCs of the old channel on every pod",
                     interval=0.01)
    return time.monotonic() - t0


def failed(summary, since=None):
    errors = dict(summary["errors"])
    for k, v in (since or {}).get("errors", {}).items():
        errors[k] -= v
    return {k: v for k, v in errors.items() if v}


def allowed_failures(kind):
    """grpcio (gRPC core) fails the first RPC after an abortive close even when
    the connection was idle, unless it retries UNAVAILABLE; with a
    connectivity watcher it usually sees the close first, but on a loaded
    machine not always (docs/architecture.md, "Adoption of established
    connections"). grpc-go loses none: the close comes early in the quiet gap."""
    return 1 if kind in ("grpcio", "grpcio-wait-for-ready", "grpcio-watch") else 0


def check_failures(kind, errors, what):
    n = sum(errors.values())
    assert set(errors) <= {"UNAVAILABLE", "Unavailable"}, f"{what}: {errors}"
    assert n <= allowed_failures(kind), f"{what}: {kind} lost {n} RPCs: {errors}"
    print(f"ADOPT {what} client={kind} failed_rpcs={n}")


@pytest.fixture
def bed(node):
    servers = node.add_server_pods(SERVERS)
    svc = node.add_service("echo", pods=servers)
    return node, svc


@pytest.mark.parametrize("kind", ["grpcio", "grpcio-wait-for-ready", "grpcio-retry",
                                  "grpcio-watch", "grpc-go"])
def test_channel_opened_before_start_is_spread(bed, build_dir, kind):
    node, svc = bed
    client = open_client(kind, node.add_pod("client-0"), svc.target4, build_dir)
    client.wait_progress(30)
    assert len(client.progress()["pods"]) == 1, "kube-proxy alone should pin the channel"
    before_ports = sports(client.place, svc.target4)
    assert len(before_ports) == 1

    t0 = time.monotonic()
    d = start_daemon(node, build_dir)
    secs = wait_spread(client, t0, "start")
    client.wait_progress(50)
    summary = client.stop()
    print(f"ADOPT start client={kind} adoption_s={secs:.2f}")
    check_failures(kind, failed(summary), "start")
    assert adopted(node, "idle") == 1
    line = d.wait_line(r"msg=adopt_pass pass=1 ", 10)
    assert "trigger=start" in line and "connections=1 idle=1 " in line, line
    assert sports(client.place, svc.target4) == [], "the old direct connection is still open"


@pytest.mark.parametrize("kind", ["grpcio", "grpc-go"])
def test_channel_adopted_again_after_kill_and_restart(bed, build_dir, kind):
    node, svc = bed
    client = open_client(kind, node.add_pod("client-0"), svc.target4, build_dir)
    client.wait_progress(20)
    d = start_daemon(node, build_dir)
    wait_spread(client, time.monotonic(), "first start")
    assert adopted(node, "idle") == 1

    d.send_signal(signal.SIGKILL)  # fail-open: the channel reconnects straight to the ClusterIP
    d.wait(10)
    testbed.wait_for(lambda: sports(client.place, svc.target4), 30,
                     "the channel to reconnect straight to the ClusterIP")
    # What the crash cost is not adoption's: count from once the channel works again.
    client.wait_progress(30, key="ok")
    before = client.progress()

    t0 = time.monotonic()
    d = start_daemon(node, build_dir, name="h2splitd-restarted")
    secs = wait_spread(client, t0, "restart")
    client.wait_progress(50)
    summary = client.stop()
    print(f"ADOPT restart client={kind} adoption_s={secs:.2f}")
    check_failures(kind, failed(summary, before), "restart")
    assert adopted(node, "idle") == 1  # the new daemon's own count


def test_service_opting_in_at_run_time_adopts_its_channel(node, build_dir):
    servers = node.add_server_pods(SERVERS)
    svc = node.add_service("echo", pods=servers, app_protocol=None)
    client = PyClient(node.add_pod("client-0"), svc.target4)
    d = start_daemon(node, build_dir)
    client.wait_progress(30)
    assert len(client.progress()["pods"]) == 1
    before = client.progress()

    t0 = time.monotonic()
    node.update_service(svc, app_protocol="kubernetes.io/h2c")  # returns once applied
    secs = wait_spread(client, t0, "opt-in")
    client.wait_progress(50)
    summary = client.stop()
    print(f"ADOPT opt_in client=grpcio adoption_s={secs:.2f}")
    check_failures("grpcio", failed(summary, before), "opt-in")
    assert adopted(node) == 1
    assert "trigger=opt_in" in d.wait_line(r"msg=adopt_pass pass=1 ", 10)


def busy_channel(node, svc, streams):
    """A channel that never looks idle: ``streams`` loops of back-to-back unary
    RPCs, each uploading 1 MB, so data is always on its way out (a server
    stream can pause long enough to look idle on a busy machine: TCP cannot
    see an open HTTP/2 stream). Returns (client, jobs); "stop" ends them."""
    c = node.add_pod("client-0").grpc_client(svc.target4)
    jobs = [c.start("loop", 0, req_size=1 << 20) for _ in range(streams)]
    seen = []

    def uploading():
        out = c.place.run(["ss", "-Htni", "state", "established", "dst", svc.target4]).stdout
        m = re.search(r"bytes_acked:(\d+)", out)
        seen.append(int(m.group(1)) if m else 0)
        return len(seen) > 5 and seen[-1] > seen[-5] + (4 << 20)
    testbed.wait_for(uploading, 30, "the busy channel to upload", interval=0.05)
    return c, jobs


def stop_all(c, jobs):
    """Stop the loops; their summed errors and RPCs that succeeded."""
    c.command("stop")
    errors, ok = {}, 0
    for j in jobs:
        r = c.wait(j, 60)
        ok += r["ok"]
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    return errors, ok


def test_adopt_all_closes_a_never_idle_channel_within_max_wait(bed, build_dir):
    """With --adopt-existing all a channel that is never idle is closed once
    --adopt-max-wait is over (or earlier, should a pause of the uploads on a
    very busy machine pass for idle), and only the RPCs in flight then fail."""
    node, svc = bed
    max_wait, streams = 2, 3
    c, jobs = busy_channel(node, svc, streams)

    t0 = time.monotonic()
    d = start_daemon(node, build_dir, "--adopt-existing", "all", "--adopt-max-wait",
                     str(max_wait))
    line = d.wait_line(r"msg=adopt_connection ", max_wait + 15)
    secs = time.monotonic() - t0
    result = re.search(r"result=(\w+)", line).group(1)
    assert result in ("forced", "idle"), line
    errors, _ = stop_all(c, jobs)
    failures = sum(errors.values())
    print(f"ADOPT all client=grpcio adoption_s={secs:.2f} result={result} "
          f"streams_in_flight={streams} failed_rpcs={failures}")
    assert secs <= max_wait + 10
    # The RPCs in flight then (up to one per loop) fail; with gRPC core each
    # loop may also lose the one RPC it starts on the closed connection before
    # the channel has noticed (the cost of any adopted grpcio channel):
    # measured 2-3, once 6 (ASan build).
    # A close that a pause on a busy machine let pass for idle may cost none.
    assert set(errors) <= {"UNAVAILABLE"} and failures <= 2 * streams, errors
    if result == "forced":
        assert failures > 0, "a forced close of a busy channel failed no RPC: was it closed?"
    r = c.unary(30)
    assert set(r["pods"]) == set(SERVERS), r["pods"]
    assert adopted(node, "forced") + adopted(node, "idle") == 1


def test_idle_mode_leaves_a_never_idle_channel_alone(bed, build_dir):
    node, svc = bed
    c, jobs = busy_channel(node, svc, 3)
    port = sports(c.place, svc.target4)

    d = start_daemon(node, build_dir, "--adopt-max-wait", "1")
    line = d.wait_line(r"msg=adopt_pass pass=1 ", 20)
    assert "not_idle=1 " in line, line
    assert sports(c.place, svc.target4) == port
    errors, ok = stop_all(c, jobs)
    assert errors == {} and ok > 0, errors
    assert adopted(node, "not_idle") == 1 and adopted(node, "idle") == 0


def test_never_touches_other_services_excluded_pods_or_the_node(bed, build_dir):
    node, svc = bed
    plain = node.add_service("plain", pods=[node.pods["server-0"]], app_protocol=None)
    adopted_c = PyClient(node.add_pod("client-0"), svc.target4)
    other = node.add_pod("other-0").grpc_client(plain.target4)
    excluded_pod = node.add_pod("excluded-0")
    excluded = excluded_pod.grpc_client(svc.target4)
    on_node = node.grpc_client(svc.target4)
    for c in (other, excluded, on_node):
        assert c.unary(3)["ok"] == 3
    keep = {"other Service": (other.place, plain.target4),
            "excluded pod": (excluded.place, svc.target4),
            "node": (node, svc.target4)}
    ports = {k: sports(*v) for k, v in keep.items()}
    assert all(len(p) == 1 for p in ports.values()), ports
    adopted_c.wait_progress(20)

    d = start_daemon(node, build_dir, "--exclude-cgroup", excluded_pod.cgroup)
    line = d.wait_line(r"msg=adopt_pass pass=1 ", 20)
    assert "connections=1 idle=1 " in line, line
    assert {k: sports(*v) for k, v in keep.items()} == ports
    assert adopted(node, "idle") == 1
    for c in (other, excluded, on_node):
        assert c.unary(3)["ok"] == 3
    assert {k: sports(*v) for k, v in keep.items()} == ports
    adopted_c.stop()


def test_ctl_adopt_runs_a_pass_on_demand(bed, build_dir):
    """With --adopt-existing off nothing is closed at start; h2splitctl adopt
    --service closes the channel on demand and prints what it did."""
    node, svc = bed
    client = PyClient(node.add_pod("client-0"), svc.target4)
    client.wait_progress(20)
    d = start_daemon(node, build_dir, "--adopt-existing", "off")
    ctl = [os.path.join(build_dir, "h2splitctl"), "--bpffs", node.bpffs]
    client.wait_progress(30)
    assert len(sports(client.place, svc.target4)) == 1, "adopted with --adopt-existing off"

    bad = node.run(ctl + ["adopt", "--service", "default/nope"], check=False)
    assert bad.returncode == 1 and "no opted-in Service" in bad.stderr, bad
    r = node.run(ctl + ["adopt", "--service", "default/echo"], timeout=60)
    assert re.search(r"pass 1 \(ctl\): 1 connection\(s\) .* 1 closed idle", r.stdout), r.stdout
    wait_spread(client, time.monotonic(), "h2splitctl adopt")
    summary = client.stop()
    check_failures("grpcio", failed(summary), "ctl")
    st = node.run(ctl + ["status"]).stdout
    assert re.search(r"adoption +off, max wait 30 s; 1 pass\(es\); connections closed idle 1",
                     st), st
    js = json.loads(node.run(ctl + ["-o", "json", "status"]).stdout)["daemon"]["adoption"]
    assert js["mode"] == "off" and js["total"]["idle"] == 1 and js["last"]["trigger"] == "ctl"
    assert d.poll() is None
