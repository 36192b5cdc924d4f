# SPDX-License-Identifier: Apache-2.0
"""Balancing by how backends behave, on the simulated node: the ewma policy
steers RPCs away from a slow pod and from one that stalls (stops reading),
outlier ejection takes a pod that answers UNAVAILABLE out of rotation until
it is healthy again, and a pod added to a Service under load gets RPCs on
channels that were open before it came. Assertions compare what the pods
served, never timings (tests/bench/balance.py measures those).
"""

import signal

import pytest

import testbed
from test_splitter import Daemon, short

SLOW_MS = 50
N = 300


class Bed:
    """Services ``latency`` (fast-0, fast-1 and slow-0, which takes 50 ms per
    RPC), ``flaky`` (ok-0, ok-1 and bad-0, which fails every RPC with
    UNAVAILABLE until SIGUSR1), ``stalling`` (fast-0, fast-1 and stall-0, which
    a test stops with SIGSTOP) and ``growing`` (fast-0, fast-1; new-0 joins in
    a test), one client pod, h2splitd (restarted per test)."""

    def __init__(self, node, build_dir):
        self.node = node
        self.fast = node.add_server_pods(["fast-0", "fast-1"])
        self.slow = node.add_server_pods(["slow-0"], delay_ms=SLOW_MS)
        self.ok = node.add_server_pods(["ok-0", "ok-1"])
        self.bad = node.add_server_pods(["bad-0"], args=("--fail-status", "14"))[0]
        self.stall, self.new = node.add_server_pods(["stall-0", "new-0"])
        self.client = node.add_pod("client-0")
        self.latency = node.add_service("latency", pods=self.fast + self.slow)
        self.flaky = node.add_service("flaky", pods=self.ok + [self.bad])
        self.stalling = node.add_service("stalling", pods=self.fast + [self.stall])
        self.growing = node.add_service("growing", pods=self.fast)
        self.daemon = Daemon(node, build_dir)

    def restart(self, *args):
        self.daemon.stop()
        return self.daemon.start("--workers", "1", "--drain-timeout", "1", *args)


@pytest.fixture(scope="module")
def bed(module_node, build_dir):
    return Bed(module_node, build_dir)


def slow_share(bed, policy):
    """RPCs of N on one fresh channel that the slow pod served under ``policy``."""
    bed.restart("--lb-policy", policy)
    with bed.client.grpc_client(bed.latency.target4) as c:
        r = c.unary(N, concurrency=4)
    assert r["ok"] == N and not r["errors"], f"{policy}: {short(r)}"
    return r["pods"].get("slow-0", 0), r


def test_ewma_sends_less_to_the_slow_pod_than_round_robin(bed):
    rr, r_rr = slow_share(bed, "round_robin")
    ew, r_ew = slow_share(bed, "ewma")
    assert rr == N // 3, f"round_robin: want {N // 3} RPCs on slow-0: {short(r_rr)}"
    # slow-0 is measured at 50 ms after its first answers and loses every
    # comparison against the fast pods after that.
    assert ew * 5 < rr, (f"ewma: slow-0 served {ew} of {N}, want well under a fifth of "
                         f"round_robin's {rr}: {short(r_ew)}")
    assert set(r_ew["pods"]) >= {"fast-0", "fast-1"}, short(r_ew)


def test_failing_pod_is_ejected_and_comes_back_once_healthy(bed):
    d = bed.restart("--lb-policy", "round_robin", "--outlier-ejection", "3000")
    with bed.client.grpc_client(bed.flaky.target4) as c:
        r = c.unary(N)
        failed = r["errors"].get("UNAVAILABLE", 0)
        assert set(r["errors"]) <= {"UNAVAILABLE"}, short(r)
        # Round robin alone would send bad-0 a third (100); ejected after 5
        # failures in a row, it gets a handful per ejection, and each one
        # lasts longer (3 s, 6 s, ...).
        assert 5 <= failed <= 25, f"want bad-0 ejected after 5 failures: {short(r)}"
        assert d.metrics().get("h2split_outlier_ejections_total") >= 1, d.notable()
        assert r["pods"].get("ok-0", 0) + r["pods"].get("ok-1", 0) == N - failed, short(r)

        bed.bad.server.send_signal(signal.SIGUSR1)  # healed
        testbed.wait_for(lambda: c.unary(10)["pods"].get("bad-0", 0) > 0, 30,
                         "bad-0 to serve again once its ejection ends")
        r = c.unary(N)
    assert r["ok"] == N and not r["errors"], short(r)
    assert r["pods"] == {"ok-0": 100, "ok-1": 100, "bad-0": 100}, \
        f"healed bad-0 back in round robin: {short(r)}"


def streams_to(daemon, svc, pod):
    """Streams h2splitd has sent to ``pod`` for ``svc`` (its own counter)."""
    return sum(v for lab, v in daemon.metrics().rows("h2split_endpoint_requests_total")
               if pod in lab.get("pod", "") and svc.name in lab.get("service", ""))


def test_ewma_stops_sending_to_a_pod_that_stalls(bed):
    """A pod whose server stops reading (SIGSTOP; its sockets stay open) holds
    the RPCs it gets until the client's deadline. ewma learns that from the
    first one and sends the next ones elsewhere; round_robin keeps sending it
    its turn. Counted by h2splitd's per-endpoint stream counter, so a slow
    answer from another pod cannot blur it."""
    n = 15
    for policy in ("round_robin", "ewma"):
        d = bed.restart("--lb-policy", policy)
        with bed.client.grpc_client(bed.stalling.target4) as c:
            r = c.unary(30)
            assert r["ok"] == 30 and "stall-0" in r["pods"], f"{policy}: {short(r)}"
            bed.stall.server.send_signal(signal.SIGSTOP)
            try:
                before = streams_to(d, bed.stalling, "stall-0")
                first = c.unary(n, rpc_timeout=1.0)
                middle = streams_to(d, bed.stalling, "stall-0")
                then = c.unary(n, rpc_timeout=1.0)
                after = streams_to(d, bed.stalling, "stall-0")
            finally:
                bed.stall.server.send_signal(signal.SIGCONT)
        for x in (first, then):
            assert set(x["errors"]) <= {"DEADLINE_EXCEEDED"}, f"{policy}: {short(x)}"
            assert "stall-0" not in x["pods"], f"{policy}: {short(x)}"
        if policy == "round_robin":
            assert after - middle == n // 3, \
                f"round_robin sends the stalled pod every third RPC: {short(then)}"
        else:
            assert middle - before <= 1, \
                f"ewma sent {middle - before} RPCs to the stalled pod, want only the first " \
                f"one that showed it: {short(first)}"
            assert after == middle, \
                f"ewma sent {after - middle} RPCs to the stalled pod again: {short(then)}"


@pytest.mark.parametrize("policy", ["round_robin", "least_request", "ewma"])
def test_pod_added_under_load_gets_rpcs_on_open_channels(bed, policy):
    """new-0 joins the Service while a channel is open and busy: the same
    channel's RPCs reach it (kube-proxy alone would never move that
    connection)."""
    bed.node.set_endpoints(bed.growing, bed.fast)
    bed.restart("--lb-policy", policy)
    with bed.client.grpc_client(bed.growing.target4) as c:
        r = c.unary(40, concurrency=4)
        assert r["ok"] == 40 and set(r["pods"]) == {"fast-0", "fast-1"}, short(r)
        bed.node.set_endpoints(bed.growing, bed.fast + [bed.new])
        testbed.wait_for(lambda: c.unary(20, concurrency=4)["pods"].get("new-0", 0) > 0, 30,
                         f"{policy}: new-0 to serve RPCs of the open channel")
        r = c.unary(60, concurrency=4)
    assert r["ok"] == 60 and not r["errors"], f"{policy}: {short(r)}"
    if policy == "round_robin":
        assert r["pods"] == {"fast-0": 20, "fast-1": 20, "new-0": 20}, short(r)
