# SPDX-License-Identifier: Apache-2.0
"""The splitter when things die under load, on a fresh simulated node per
test: a backend pod killed -9, a backend stopped gracefully (GOAWAY), a
backend whose network is cut, a service whose endpoints go away and come
back, h2splitd itself stopped with SIGTERM, and h2splitd out of file
descriptors.
Each test asserts what the clients saw: which RPCs failed, with which status,
and where the later ones went."""

import collections
import json
import os
import re
import signal
import socket
import struct

import pytest

import testbed
from test_splitter import Daemon, assert_all_ok, peer_ips, short

CONCURRENCY = 8


class Bed:
    """Three Echo pods (10 s grace on SIGTERM) behind one opted-in service,
    three client pods, h2splitd (round robin, 2 workers)."""

    def __init__(self, node, build_dir):
        self.node = node
        self.servers = node.add_server_pods(["server-0", "server-1", "server-2"],
                                            args=("--grace", "10"))
        self.clients = [node.add_pod(f"client-{i}") for i in range(3)]
        self.svc = node.add_service("echo", pods=self.servers)
        self.daemon = Daemon(node, build_dir).start("--lb-policy", "round_robin",
                                                    "--workers", "2", "--drain-timeout", "10")
        # Channels from the node straight to each server (the node is not redirected).
        self.direct = {p.name: node.grpc_client(f"{p.ip4}:{testbed.GRPC_PORT}")
                       for p in self.servers}

    def served(self, pod):
        """Unary RPCs ``pod`` has served, asked directly (not through h2split)."""
        return self.direct[pod.name].stats().get("counts", {}).get("Unary", 0)


@pytest.fixture
def bed(node, build_dir):
    return Bed(node, build_dir)


def load_until_busy(bed, c, victim, n=3000):
    """Start ``n`` unary RPCs (``CONCURRENCY`` in flight, 10 ms each at the
    server) in the background; return the job once ``victim`` is serving."""
    job = c.start("unary", n, concurrency=CONCURRENCY, delay_ms=10, rpc_timeout=30)
    testbed.wait_for(lambda: bed.served(victim) >= 100, 20, f"{victim.name} to serve 100 RPCs")
    return job


def test_upstream_killed_fails_only_rpcs_in_flight_on_it(bed):
    victim = bed.servers[1]
    with bed.clients[0].grpc_client(bed.svc.target4) as c:
        job = load_until_busy(bed, c, victim)
        victim.kill()
        r = c.wait(job, 120)
        failed = r["n"] - r["ok"]
        assert set(r["errors"]) <= {"UNAVAILABLE"}, \
            f"RPCs lost with {victim.name} must fail UNAVAILABLE: {short(r)}"
        # At most CONCURRENCY RPCs were in flight at any moment, a third of them
        # on the victim: more failures means new RPCs were sent to a dead pod.
        assert failed <= CONCURRENCY, \
            f"{failed} RPCs failed when {victim.name} was killed, at most {CONCURRENCY} " \
            f"were in flight: {short(r)}\n{bed.daemon.notable()}"
        assert r["n"] == 3000, short(r)

        # Give the daemon a moment (the deadline), then every RPC must succeed.
        def clean_batch():
            b = c.unary(200, concurrency=4, rpc_timeout=10)
            return b["ok"] == b["n"] and b
        testbed.wait_for(clean_batch, 10, "a batch of 200 RPCs without a failure")
        after = c.unary(600, concurrency=4, rpc_timeout=10)
    assert_all_ok(after, f"RPCs after {victim.name} was killed")
    assert victim.name not in after["pods"], \
        f"RPCs after the kill were answered by {victim.name}?: {after['pods']}"
    assert set(after["pods"]) == {"server-0", "server-2"}, short(after)


def test_upstream_graceful_stop_loses_no_rpc(bed):
    victim = bed.servers[1]
    with bed.clients[0].grpc_client(bed.svc.target4) as c:
        job = load_until_busy(bed, c, victim)
        victim.server.send_signal(signal.SIGTERM)  # grpc server.stop(grace): GOAWAY, drain
        assert victim.server.wait(20) == 0, victim.server.log_tail()
        r = c.wait(job, 120)
        # grpcio's server answers CANCELLED, itself, to the RPCs it had received
        # but not yet handed to a handler thread when stop() began (gRPC core
        # servers do not drain with a second GOAWAY: grpc/grpc#24237); a client
        # connected straight to it loses those too. h2splitd passes such answers
        # on (it never makes up a CANCELLED) and must lose nothing itself: every
        # other RPC succeeds, and every CANCELLED one is an answer it forwarded.
        forwarded = bed.daemon.metrics().get("h2split_service_grpc_responses_total",
                                             grpc_status="1")
        cancelled = r["errors"].get("CANCELLED", 0)
        assert set(r["errors"]) <= {"CANCELLED"} and r["ok"] + cancelled == r["n"], \
            f"RPCs while {victim.name} stopped gracefully: {short(r)}"
        assert cancelled == forwarded and cancelled <= CONCURRENCY, \
            f"{cancelled} RPCs CANCELLED, {forwarded:g} CANCELLED answers from the pods " \
            f"(at most {CONCURRENCY} were in flight): {short(r)}"
        after = c.unary(300, concurrency=4, rpc_timeout=10)
    assert_all_ok(after, f"RPCs after {victim.name} stopped")
    assert set(after["pods"]) == {"server-0", "server-2"}, \
        f"RPCs after {victim.name} exited went to {after['pods']}"


def test_daemon_sigterm_under_load_loses_no_rpc_and_connects_go_direct(bed):
    d = bed.daemon
    clients = testbed.open_clients(bed.clients, bed.svc.target4)
    try:
        jobs = [c.start("unary", 3000, concurrency=4, delay_ms=5, wait_for_ready=True,
                        rpc_timeout=30) for c in clients]
        testbed.wait_for(lambda: d.metrics().get("h2split_downstream_streams_total") >= 600,
                         20, "600 streams through h2splitd")
        before = d.ctl("counters")
        d.proc.send_signal(signal.SIGTERM)
        rc = d.proc.wait(30)
        log = "\n".join(d.proc.lines[-15:])
        assert rc == 0, f"h2splitd exited {rc} on SIGTERM:\n{log}"
        results = [c.wait(j, 120) for c, j in zip(clients, jobs)]
        for pod, r in zip(bed.clients, results):
            assert_all_ok(r, f"{pod.name}'s RPCs across the h2splitd SIGTERM")
            assert set(peer_ips(r)) == {pod.ip4}, \
                f"{pod.name}'s RPCs reached backends from {peer_ips(r)}, want {pod.ip4}"
        mid = d.ctl("counters")
        assert mid["bypass_no_listener"] >= before["bypass_no_listener"] + len(clients), \
            f"bypass_no_listener {before['bypass_no_listener']} -> " \
            f"{mid['bypass_no_listener']}: the {len(clients)} clients' reconnects did not " \
            "go direct"
    finally:
        for c in clients:
            c.close()
    # A new client, with h2splitd gone: straight through kube-proxy.
    pod = bed.clients[0]
    with pod.grpc_client(bed.svc.target4) as c:
        r = c.unary(50, wait_for_ready=True, rpc_timeout=10)
    assert_all_ok(r, "a new client after h2splitd exited")
    assert set(peer_ips(r)) == {pod.ip4}, f"backends saw {peer_ips(r)}, want {pod.ip4}"
    end = d.ctl("counters")
    assert end["bypass_no_listener"] > mid["bypass_no_listener"], \
        f"the new client's connect was not counted as bypass_no_listener: {end}"
    assert end["redirected"] == mid["redirected"], \
        f"connects were still redirected after h2splitd exited: {mid} -> {end}"


# ---- upstream liveness --------------------------------------------------------------------

def cut(node, pod, on):
    """DROP everything to and from ``pod`` in the node netns (the path between
    pods, and between a client pod's upstream sockets and the backend)."""
    op = "-I" if on else "-D"
    for flag in ("-d", "-s"):
        node.run(["iptables", "-w", op, "FORWARD", flag, pod.ip4, "-j", "DROP"])


def test_upstream_network_cut_fails_only_its_rpcs(bed):
    """server-1's network is cut (packets dropped, no RST) while RPCs are in
    flight on it. With --upstream-keepalive-time/timeout 1 s the daemon's PING
    on that connection goes unanswered, it closes the connection, and the RPCs
    on it fail UNAVAILABLE rather than hang until their deadline; every other
    RPC succeeds. Once the DROP is removed, server-1 gets traffic again."""
    d = bed.daemon
    d.stop()
    d.start("--lb-policy", "round_robin", "--workers", "2", "--upstream-keepalive-time", "1",
            "--upstream-keepalive-timeout", "1", "--outlier-ejection", "1000")
    victim = bed.servers[1]
    with bed.clients[0].grpc_client(bed.svc.target4) as c:
        job = load_until_busy(bed, c, victim)
        cut(bed.node, victim, True)
        try:
            testbed.wait_for(
                lambda: d.metrics().get("h2split_upstream_keepalive_timeouts_total") >= 1, 20,
                "the daemon to find the cut connection dead (no PING ACK)")
            r = c.wait(job, 180)
        finally:
            cut(bed.node, victim, False)
        failed = r["n"] - r["ok"]
        print(f"network cut: {short(r)}")
        m = d.metrics()
        assert m.get("h2split_limit_exceeded_total", limit="upstream_keepalive_timeout") == \
            m.get("h2split_upstream_keepalive_timeouts_total"), \
            "each unanswered PING counts as limit=upstream_keepalive_timeout"
        assert r["n"] == 3000, short(r)
        assert set(r["errors"]) <= {"UNAVAILABLE"}, \
            f"RPCs on the cut connection must fail UNAVAILABLE, not hang: {short(r)}"
        assert failed <= CONCURRENCY, \
            f"{failed} RPCs failed, at most {CONCURRENCY} were in flight: {short(r)}"
        served = bed.served(victim)

        def victim_back():
            c.unary(30, concurrency=4, rpc_timeout=10)
            return bed.served(victim) > served
        testbed.wait_for(victim_back, 30, f"{victim.name} to get RPCs again after the cut")


def test_endpoints_emptied_and_refilled(bed):
    """The services file is rewritten with no endpoints for the service, then
    with them again. Meanwhile the same grpcio channels keep making RPCs:
    while the list is empty each fails UNAVAILABLE at once (never waits for
    its deadline); after the refill every RPC succeeds, on the same channel."""
    d = bed.daemon
    clients = testbed.open_clients(bed.clients[:2], bed.svc.target4)
    try:
        for c in clients:
            assert_all_ok(c.unary(20, rpc_timeout=10), "RPCs before the endpoints went away")
        bed.node.set_endpoints(bed.svc, [])
        d.wait_usable(bed.svc, 0)
        for c in clients:
            r = c.unary(20, rpc_timeout=20)
            # DEADLINE_EXCEEDED here would mean RPCs hung until their deadline.
            assert r["ok"] == 0 and set(r["errors"]) == {"UNAVAILABLE"}, short(r)
        bed.node.set_endpoints(bed.svc, bed.servers)
        d.wait_usable(bed.svc, 3)
        for c in clients:
            r = c.unary(60, concurrency=4, rpc_timeout=10)
            assert_all_ok(r, "RPCs on the same channel after the refill")
    finally:
        for c in clients:
            c.close()


# ---- a shared upstream connection ------------------------------------------------------

H2RAW = os.path.join(os.path.dirname(os.path.abspath(__file__)), "h2raw.py")


def test_client_that_stops_reading_does_not_stall_others_on_a_shared_upstream(node, build_dir):
    """With --upstream-source node every pod's streams to an endpoint share one
    upstream connection. A pod opens 128 ServerStream RPCs of 4 MiB each and
    never reads its socket: the daemon holds up to a stream window (256 KiB)
    per stream for it, 32 MiB, more than the upstream connection's 16 MiB
    window. Its share of that window is capped (4 MiB), so another pod's RPCs
    on the same upstream connection keep completing meanwhile."""
    servers = node.add_server_pods(["server-0"], args=("--workers", "256",
                                                       "--max-concurrent-streams", "1000"))
    svc = node.add_service("echo", pods=servers)
    attacker, good = node.add_pod("attacker"), node.add_pod("client-0")
    d = Daemon(node, build_dir).start("--upstream-source", "node", "--workers", "1")
    backend = node.grpc_client(f"{servers[0].ip4}:{testbed.GRPC_PORT}")
    c = good.grpc_client(svc.target4)
    streams, p = 128, None
    try:
        # First the pool's one connection (its SETTINGS allow 1000 streams).
        assert_all_ok(c.unary(5, rpc_timeout=5), "RPCs before the other pod came")
        p = attacker.popen([testbed.python(), "-u", H2RAW, "attack", "never-read", svc.vip4,
                            str(testbed.GRPC_PORT), "--streams", str(streams), "--n", "64",
                            "--seconds", "60"], name="never-read", watch=True)
        p.wait_line("holding", 15)
        # Each now sends until flow control stops it: 32 MiB of stream windows
        # against the upstream connection's 16 MiB.
        testbed.wait_for(lambda: backend.stats()["active"] >= streams, 20,
                         f"{streams} ServerStream RPCs to reach the backend")
        assert d.metrics().get("h2split_upstream_connections_active") == 1, \
            "the two pods' streams are not on one upstream connection"
        r = c.unary(20, concurrency=2, rpc_timeout=5)
        assert_all_ok(r, "RPCs of another pod beside a client that stopped reading")
        assert backend.stats()["active"] >= streams, "the stalled client's RPCs ended early"
    finally:
        if p:
            p.stop()
        c.close()
        backend.close()


# ---- out of file descriptors -----------------------------------------------------------

NOFILE = 256
FD_RESERVE = 32  # worker.c: RLIMIT_NOFILE / 8, at least FD_RESERVE_MIN (32)
WORKERS = 2
# A pod that opens connections to HOST:PORT, each starting HTTP/2 (preface +
# SETTINGS) so the daemon keeps it as an idle downstream, and holds them
# until it is stopped. Prints how many it opened and how many were reset.
HOG = r"""
import json, socket, sys, threading
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
held, reset = [], 0
for _ in range(n):
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect((host, port))
        s.sendall(preface)
        held.append(s)
    except OSError:
        reset += 1
        s.close()
print(json.dumps({"opened": len(held), "reset": reset}), flush=True)
threading.Event().wait()
"""


def tcp_sockets(pid):
    """inode -> (local port, remote IPv4 address, state) of every TCP socket
    in the daemon's netns (/proc/PID/net/tcp)."""
    out = {}
    with open(f"/proc/{pid}/net/tcp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            local, remote = cols[1].split(":"), cols[2].split(":")
            ip = socket.inet_ntoa(struct.pack("<I", int(remote[0], 16)))
            out[cols[9]] = (int(local[1], 16), ip, cols[3])
    return out


def daemon_fds(pid, admin_port=9901):
    """The daemon's open fds by kind: "admin" (connections to its admin port,
    whose socket may outlive a scrape a moment), "tcp:<peer IP>" for other
    connected sockets, else what the fd is ("anon_inode:[eventpoll]", "pipe"...)."""
    socks, kinds = tcp_sockets(pid), collections.Counter()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        sock = socks.get(target[8:-1]) if target.startswith("socket:[") else None
        if sock and sock[2] != "0A":  # 0A: LISTEN
            kinds["admin" if sock[0] == admin_port else f"tcp:{sock[1]}"] += 1
        else:
            kinds[target.split(":")[0] if target.startswith("socket:") else
                  re.sub(r"\d+", "N", target)] += 1
    return kinds


def fds_but_admin(pid):
    kinds = daemon_fds(pid)
    return sum(kinds.values()) - kinds["admin"]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_fd_exhaustion_fails_open_and_recovers(node, build_dir):
    """h2splitd with RLIMIT_NOFILE 256 and a pod that opens 400 connections
    through it: once its fds run short the daemon pauses accepting and empties
    the liveness slot, so new connects go direct (kube-proxy path). The daemon
    stays up and idle (no accept loop at 100% CPU), a grpcio client sees no
    failure meanwhile, and when the hog goes away redirection comes back and
    RPCs are split by the daemon again."""
    servers = node.add_server_pods(["server-0", "server-1"])
    svc = node.add_service("echo", pods=servers)
    hog_pod, client_pod = node.add_pod("hog"), node.add_pod("client-0")
    d = Daemon(node, build_dir).start("--workers", str(WORKERS), "--max-connections-per-pod", "0",
                                      wrapper=("prlimit", f"--nofile={NOFILE}:{NOFILE}", "--"))
    fds0, redirected0 = fds_but_admin(d.pid), d.ctl("counters")["redirected"]
    hog = hog_pod.popen([testbed.python(), "-u", "-c", HOG, svc.vip4,
                         str(testbed.GRPC_PORT), "400"], name="hog", watch=True)
    held = json.loads(hog.wait_line(r'"opened"', 120))
    testbed.wait_for(lambda: d.metrics().get("h2split_redirecting") == 0, 10,
                     "h2splitd to report the pause (the liveness slot emptied)")

    # Paused: every connect BPF sent to the daemon was either held or reset,
    # none is left hanging in an accept queue (it polls and resets them).
    def settled():
        m, redirected = d.metrics(), d.ctl("counters")["redirected"] - redirected0
        return m if redirected == m.get("h2split_downstream_connections_total") + \
            m.get("h2split_fd_exhaustion_refused_total") else None
    try:
        m = testbed.wait_for(settled, 10, "every redirected connect to be held or reset")
    except TimeoutError as e:
        m = d.metrics()
        raise AssertionError(
            f"{e}; redirected {d.ctl('counters')['redirected'] - redirected0}, held "
            f"{m.get('h2split_downstream_connections_total')}, reset "
            f"{m.get('h2split_fd_exhaustion_refused_total')}") from None
    # Accepted sockets stay below the reserve line; each worker's spare fd
    # (/dev/null, given up and reopened around every refusal) may be reopened
    # above it while the other worker holds the lower numbers.
    bound = NOFILE - FD_RESERVE + WORKERS
    try:
        fds = testbed.wait_for(lambda: (lambda n: n <= bound and n)(
            fds_but_admin(d.pid)), 5, f"the paused daemon to hold at most "
            f"{bound} fds (the rest is its reserve)")
    except TimeoutError as e:
        raise AssertionError(f"{e}: {dict(daemon_fds(d.pid))}") from None
    print(f"hog: {held}; daemon: {fds0} fds before, {fds} paused; paused "
          f"{m.get('h2split_fd_exhaustion_pauses_total')} times, "
          f"{m.get('h2split_fd_exhaustion_refused_total')} connections refused, "
          f"{m.get('h2split_downstream_connections_active')} held")
    assert 1 <= m.get("h2split_fd_exhaustion_pauses_total") <= 2, held  # once per worker at most
    assert m.get("h2split_fd_exhaustion_refused_total") >= 1, held
    # It held connections until only the reserve was left (a fd within it is
    # reset), not fewer; every one it held is still open ...
    assert fds >= NOFILE - FD_RESERVE - 4, (fds0, fds, held)
    assert m.get("h2split_downstream_connections_active") == \
        m.get("h2split_downstream_connections_total"), "a held connection was dropped"
    # ... and every connection from the hog the daemon has an fd for is a held
    # one: a reset one leaves none behind.
    kinds = daemon_fds(d.pid)
    assert m.get("h2split_downstream_connections_active") == kinds[f"tcp:{hog_pod.ip4}"], \
        (fds0, fds, held, kinds)

    cpu0 = cpu_seconds(d.pid)
    streams0 = d.metrics().get("h2split_downstream_streams_total")
    with client_pod.grpc_client(svc.target4) as c:
        r = c.unary(100, concurrency=4, rpc_timeout=10)
    assert_all_ok(r, "RPCs while h2splitd is out of fds")
    assert d.metrics().get("h2split_downstream_streams_total") == streams0, \
        "RPCs went through the paused daemon"
    if not testbed.sanitized():
        # A level-triggered accept loop would burn a CPU all along.
        assert cpu_seconds(d.pid) - cpu0 < 0.5 * r["ms"] / 1000 + 0.5, r["ms"]
    assert d.running(), d.proc.lines[-20:]

    hog.stop()
    testbed.wait_for(lambda: d.metrics().get("h2split_redirecting") == 1, 15,
                     "redirection to resume once the hog's connections closed")
    streams0 = d.metrics().get("h2split_downstream_streams_total")
    with client_pod.grpc_client(svc.target4) as c:
        r = c.unary(50, concurrency=4, rpc_timeout=10)
    assert_all_ok(r, "RPCs after the fds came back")
    assert d.metrics().get("h2split_downstream_streams_total") - streams0 == 50, \
        "RPCs after recovery were not split by h2splitd"
