# SPDX-License-Identifier: Apache-2.0
"""Retry and hedging policies (h2split.io/retry-policy, h2split.io/hedging-policy,
h2split.io/per-try-timeout) on the simulated node, with real grpcio clients
and servers: a pod failing 30% of RPCs with UNAVAILABLE is hidden; a Service
whose pods all fail gets no retry storm (the retry budget); a method the
policy does not list is never retried; a stream whose response headers went
out is never retried; nor is a request above --retry-buffer-bytes; server
pushback delays a retry, a negative one stops it; hedging cuts the tail of a
pod that stalls, and the losing attempts are cancelled.
What the clients got is checked against what the pods served (their own
counters, asked directly) and what h2splitd counts (/metrics, /services).
"""

import json
import re

import pytest

import testbed
from test_splitter import Daemon, short

WORKERS = 2
RETRY_BUFFER = 16384
POLICY = {"maxAttempts": 3, "initialBackoff": "0.005s", "maxBackoff": "0.05s",
          "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}


# Enough budget for the tests that count every retry one by one.
AMPLE = {"retryBudget": {"ratio": 4, "minPerSecond": 100}}


def policy(**over):
    p = dict(POLICY)
    p.update(over)
    return {"h2split.io/retry-policy": json.dumps(p)}


class Bed:
    """Services, each behind its own pods (``--fail-pct``: that share of RPCs
    fails UNAVAILABLE, Trailers-Only):
    ``flaky`` (ok-0, ok-1, bad30-0 failing 30%; retry policy) and ``flaky-bare``
    (the same pods, no policy); ``dead`` (dead-0, dead-1 failing all; retry
    policy, default budget); ``methods`` (ok-2, half-0 failing 50%; policy for
    ClientStream only); ``streams`` (str-0, str-1; policy); ``big``
    (big-0, big-1 failing all; policy); ``push`` (push-0 failing all with
    pushback 300 ms, ok-3; policy) and ``pushneg`` (neg-0 failing all with
    pushback -1, ok-3; policy); ``slowtry`` (stall-0 holding every RPC 3 s,
    ok-3; policy, per-try timeout 200 ms) and ``slowtry-bare`` (stall-0; the
    per-try timeout alone); ``hedged`` (hs-0..2, each holding 5% of the RPCs
    200 ms; hedging after 10 ms, 3 attempts) and ``unhedged`` (the same pods,
    no policy); ``hedge-nf`` and ``hedge-fatal`` (dead-0, ok-0; hedging
    after 3 s, UNAVAILABLE non-fatal or not); ``badpol`` (ok-0; every
    policy annotation invalid). One client pod; h2splitd, 2
    workers, round robin, no outlier ejection."""

    def __init__(self, node, build_dir):
        self.node = node
        fail = lambda pct, *more: ("--fail-pct", str(pct), *more)  # noqa: E731
        self.ok = node.add_server_pods(["ok-0", "ok-1", "ok-2", "ok-3"])
        self.bad30 = node.add_server_pods(["bad30-0"], args=fail(30))[0]
        self.dead = node.add_server_pods(["dead-0", "dead-1"], args=fail(100))
        self.half = node.add_server_pods(["half-0"], args=fail(50))[0]
        self.str = node.add_server_pods(["str-0", "str-1"])
        self.big = node.add_server_pods(["big-0", "big-1"], args=fail(100))
        self.push = node.add_server_pods(["push-0"], args=fail(100, "--pushback", "300"))[0]
        self.neg = node.add_server_pods(["neg-0"], args=fail(100, "--pushback", "-1"))[0]
        self.stall = node.add_server_pods(["stall-0"], args=("--stall-pct", "100",
                                                            "--stall-ms", "3000"))[0]
        self.client = node.add_pod("client-0")
        self.flaky = node.add_service("flaky", pods=self.ok[:2] + [self.bad30],
                                      annotations=policy())
        self.flaky_bare = node.add_service("flaky-bare", pods=self.ok[:2] + [self.bad30])
        self.dead_svc = node.add_service("dead", pods=self.dead, annotations=policy())
        self.methods = node.add_service("methods", pods=[self.ok[2], self.half],
                                        annotations=policy(
                                            maxAttempts=2, **AMPLE,
                                            methods=["h2split.test.Echo/ClientStream"]))
        self.streams = node.add_service("streams", pods=self.str, annotations=policy())
        self.big_svc = node.add_service("big", pods=self.big, annotations=policy(**AMPLE))
        self.push_svc = node.add_service("push", pods=[self.push, self.ok[3]],
                                         annotations=policy(maxAttempts=2, **AMPLE,
                                                            initialBackoff="0.001s",
                                                            maxBackoff="0.001s"))
        self.neg_svc = node.add_service("pushneg", pods=[self.neg, self.ok[3]],
                                        annotations=policy(maxAttempts=2, **AMPLE))
        # Round robin, outlier ejection off: failing pods keep their share of
        # the RPCs, so what the clients see is the retries' doing alone.
        self.hs = node.add_server_pods(["hs-0", "hs-1", "hs-2"],
                                       args=("--stall-pct", "5", "--stall-ms", "200"))
        self.hedged = node.add_service("hedged", pods=self.hs, annotations={
            "h2split.io/hedging-policy": json.dumps({
                "maxAttempts": 3, "hedgingDelay": "0.01s",
                "nonFatalStatusCodes": ["UNAVAILABLE"], **AMPLE})})
        self.unhedged = node.add_service("unhedged", pods=self.hs)
        hedge = {"maxAttempts": 3, "hedgingDelay": "3s", **AMPLE}
        self.hedge_nf = node.add_service("hedge-nf", pods=[self.dead[0], self.ok[0]],
                                         annotations={"h2split.io/hedging-policy": json.dumps(
                                             {**hedge, "nonFatalStatusCodes": ["UNAVAILABLE"]})})
        self.hedge_fatal = node.add_service("hedge-fatal", pods=[self.dead[0], self.ok[0]],
                                            annotations={"h2split.io/hedging-policy":
                                                         json.dumps(hedge)})
        self.badpol = node.add_service("badpol", pods=[self.ok[0]], annotations={
            "h2split.io/retry-policy": '{"maxAttempts": 9, "initialBackoff": "0.01s"}',
            "h2split.io/hedging-policy": '{"maxAttempts": 2, "hedgingDelay": "10ms"}',
            "h2split.io/per-try-timeout": "soon"})
        self.slowtry = node.add_service("slowtry", pods=[self.stall, self.ok[3]],
                                        annotations={**policy(**AMPLE),
                                                     "h2split.io/per-try-timeout": "200ms"})
        self.slowtry_bare = node.add_service("slowtry-bare", pods=[self.stall],
                                             annotations={"h2split.io/per-try-timeout": "200ms"})
        self.daemon = Daemon(node, build_dir).start(
            "--workers", str(WORKERS), "--retry-buffer-bytes", str(RETRY_BUFFER),
            "--outlier-failures", "0", "--outlier-failure-percent", "0",
            "--lb-policy", "round_robin")
        self.direct = {}

    def stats(self, pod):
        """The pod's own counters, asked directly (not through h2split)."""
        if pod.name not in self.direct:
            self.direct[pod.name] = self.node.grpc_client(f"{pod.ip4}:{testbed.GRPC_PORT}")
        return self.direct[pod.name].stats()

    def served(self, pods, method="Unary"):
        return sum(self.stats(p).get("counts", {}).get(method, 0) for p in pods)

    def metric(self, name, svc, **labels):
        return self.daemon.metrics().get(name, service=f"default/{svc.name}:"
                                         f"{testbed.GRPC_PORT}", **labels)

    def close(self):
        for c in self.direct.values():
            c.close()


@pytest.fixture(scope="module")
def bed(module_node, build_dir):
    b = Bed(module_node, build_dir)
    try:
        yield b
    finally:
        b.close()
        b.daemon.stop()


@pytest.fixture
def client(bed):
    clients = []

    def open_(svc):
        c = bed.client.grpc_client(svc.target4)
        clients.append(c)
        return c
    yield open_
    for c in clients:
        c.close()


def test_policy_in_force_is_shown(bed):
    svcs = bed.daemon.services()
    r = svcs["flaky"]["retries"]
    assert r["retry"]["max_attempts"] == 3 and \
        r["retry"]["retryable_status_codes"] == ["UNAVAILABLE"], r
    assert r["retry"]["initial_backoff_ms"] == 5 and r["retry"]["max_backoff_ms"] == 50, r
    assert r["retry"]["budget_ratio"] == pytest.approx(0.2) and \
        r["retry"]["budget_min_per_second"] == pytest.approx(10), r
    assert r["hedging"] is None and r["short"] == "retry/3", r
    assert svcs["flaky-bare"]["retries"]["retry"] is None
    # Invalid values: logged, nothing applied.
    bad = svcs["badpol"]["retries"]
    assert bad["retry"] is None and bad["hedging"] is None and bad["short"] == "off", bad
    log = "\n".join(bed.daemon.proc.lines)
    for key, why in (("retry-policy", "maxAttempts"), ("hedging-policy", "hedgingDelay"),
                     ("per-try-timeout", "duration")):
        assert re.search(rf"annotation_ignored service=default/badpol key=h2split.io/{key} "
                         rf".*{why}", log), f"no annotation_ignored for {key}"

    assert svcs["methods"]["retries"]["retry"]["methods"] == ["h2split.test.Echo/ClientStream"]
    # h2splitctl services, inside the node netns (where the admin API listens).
    argv = [bed.daemon.ctl_binary, "--bpffs", bed.node.bpffs]
    rows = {row.get("service"): row
            for row in json.loads(bed.node.run(argv + ["-o", "json", "services"]).stdout)}
    key = f"default/flaky:{testbed.GRPC_PORT}"
    assert key in rows and rows[key]["retries"]["short"] == "retry/3", list(rows)
    text = bed.node.run(argv + ["services"]).stdout.splitlines()
    assert "RETRIES" in text[0].split(), text[0]
    assert any(" default/flaky:" in l and l.split()[-1] == "retry/3" for l in text), text


def test_pod_failing_30pct_is_hidden_by_retries(bed, client):
    before = bed.served([bed.bad30])
    c = client(bed.flaky)
    r = c.unary(10000, concurrency=32, rpc_timeout=30, timeout=300)
    failed = r["n"] - r["ok"]
    assert r["n"] == 10000, short(r)
    assert r["ok"] / r["n"] >= 0.9999, \
        f"{failed} of {r['n']} RPCs failed behind a retry policy: {short(r)}"
    retried = bed.metric("h2split_service_retries_total", bed.flaky, reason="status")
    hit = bed.served([bed.bad30]) - before
    # bad30-0 failed ~30% of what it got; every one of those was retried.
    assert hit >= 100 and retried >= hit * 0.15, \
        f"bad30-0 served {hit} attempts, {retried:g} retries on status: {short(r)}"
    assert "bad30-0" not in r["pods"] or r["pods"]["bad30-0"] < hit, short(r)

    # The same pods without a policy: the failures reach the client.
    bare = client(bed.flaky_bare).unary(600, concurrency=8, rpc_timeout=30)
    assert bare["errors"].get("UNAVAILABLE", 0) > 0, \
        f"without a policy bad30-0's failures should show: {short(bare)}"


def test_all_pods_failing_no_retry_storm(bed, client):
    before = bed.served(bed.dead)
    exhausted0 = bed.metric("h2split_service_retry_budget_exhausted_total", bed.dead_svc)
    n = 1500
    r = client(bed.dead_svc).unary(n, concurrency=16, rpc_timeout=30, timeout=300)
    attempts = bed.served(bed.dead) - before
    secs = r["ms"] / 1000.0
    # retry_budget.h: retries <= ratio * requests + minPerSecond * (T + 1), per worker.
    bound = n * (1 + 0.2) + 10 * (secs + 1) * WORKERS
    assert r["ok"] == 0 and r["errors"].get("UNAVAILABLE") == n, short(r)
    assert n < attempts <= bound, \
        f"{attempts} upstream attempts for {n} RPCs in {secs:.1f} s (bound {bound:.0f})"
    exhausted = bed.metric("h2split_service_retry_budget_exhausted_total",
                           bed.dead_svc) - exhausted0
    assert exhausted >= n * 0.5, f"budget exhausted {exhausted:g} times for {n} failing RPCs"
    print(f"storm: {n} RPCs, {attempts} upstream attempts, bound {bound:.0f}, {secs:.1f} s")


def test_method_not_listed_is_never_retried(bed, client):
    before = bed.served([bed.ok[2], bed.half])
    retried0 = bed.metric("h2split_service_retries_total", bed.methods)
    c = client(bed.methods)
    r = c.unary(400, concurrency=8, rpc_timeout=30)
    attempts = bed.served([bed.ok[2], bed.half]) - before
    assert attempts == r["n"] == 400, f"{attempts} attempts for 400 unary RPCs: {short(r)}"
    assert r["errors"].get("UNAVAILABLE", 0) > 0, short(r)
    assert bed.metric("h2split_service_retries_total", bed.methods) == retried0
    # The listed method is retried (to the other pod): every one succeeds.
    streams = [c.client_stream(3, rpc_timeout=30) for _ in range(40)]
    assert all(s["ok"] == 1 for s in streams), [short(s) for s in streams if not s["ok"]]
    assert bed.metric("h2split_service_retries_total", bed.methods, reason="status") > 0


def test_stream_with_headers_out_is_not_retried(bed, client):
    c = client(bed.streams)
    job = c.start("server_stream", 100, gap_ms=100, rpc_timeout=60)
    victim = None

    def streaming():
        nonlocal victim
        for p in bed.str:
            if bed.stats(p).get("stream_msgs", 0) >= 2:
                victim = p
                return True
        return False
    testbed.wait_for(streaming, 20, "a pod to stream two messages")
    other = next(p for p in bed.str if p is not victim)
    bed.direct.pop(victim.name).close()
    victim.kill()
    r = c.wait(job, 60)
    assert r["errors"] == {"UNAVAILABLE": 1} and r["messages"] >= 2, short(r)
    assert bed.stats(other).get("counts", {}).get("ServerStream", 0) == 0, \
        "the stream was sent again to the other pod after its headers went out"
    assert bed.metric("h2split_service_retries_total", bed.streams) == 0


def test_request_above_retry_buffer_is_not_retried(bed, client):
    c = client(bed.big_svc)
    before = bed.served(bed.big)
    small = c.unary(20, req_size=1024, rpc_timeout=30)
    mid = bed.served(bed.big)
    large = c.unary(20, req_size=RETRY_BUFFER * 2, rpc_timeout=30)
    after = bed.served(bed.big)
    assert small["ok"] == 0 and large["ok"] == 0, (short(small), short(large))
    assert mid - before == 20 * 3, f"small requests: {mid - before} attempts for 20 RPCs"
    assert after - mid == 20, f"requests above the buffer: {after - mid} attempts for 20 RPCs"


def test_pushback_delays_retry_and_negative_stops_it(bed, client):
    c = client(bed.push_svc)
    hit = 0
    for _ in range(12):
        before = bed.served([bed.push])
        r = c.unary(1, rpc_timeout=30)
        assert r["ok"] == 1 and r["pods"] == {"ok-3": 1}, short(r)
        if bed.served([bed.push]) > before:
            hit += 1
            assert r["ms"] >= 300, f"retry after pushback 300 ms came after {r['ms']} ms"
    assert hit > 0, "push-0 never got an RPC"
    # Each retry said it was one (gRFC A6), the first attempts did not.
    assert bed.stats(bed.ok[3]).get("prev_attempts", {}).get("1", 0) >= hit, \
        bed.stats(bed.ok[3])
    assert not bed.stats(bed.push).get("prev_attempts"), bed.stats(bed.push)

    c2 = client(bed.neg_svc)
    before = bed.served([bed.neg])
    r = c2.unary(40, concurrency=4, rpc_timeout=30)
    refused = bed.served([bed.neg]) - before
    assert refused > 0 and r["errors"].get("UNAVAILABLE", 0) == refused, \
        f"neg-0 failed {refused} RPCs with pushback -1; the client saw {short(r)}"
    assert bed.metric("h2split_service_retries_total", bed.neg_svc) == 0


def test_per_try_timeout_retries_elsewhere_within_the_deadline(bed, client):
    c = client(bed.slowtry)
    before = bed.served([bed.stall])
    r = c.unary(10, concurrency=2, rpc_timeout=30)
    hit = bed.served([bed.stall]) - before
    assert r["ok"] == 10 and r["pods"] == {"ok-3": 10}, short(r)
    assert hit > 0, "stall-0 never got an RPC"
    assert r["lat_ms"]["max"] < 3000, f"an RPC waited for stall-0: {short(r)}"
    assert bed.metric("h2split_service_retries_total", bed.slowtry,
                      reason="per_try_timeout") >= hit

    # Without a retry policy the client gets DEADLINE_EXCEEDED at the per-try
    # timeout; with a grpc-timeout shorter than it, the RPC's own deadline.
    bare = client(bed.slowtry_bare)
    r = bare.unary(2, rpc_timeout=30)
    assert r["errors"] == {"DEADLINE_EXCEEDED": 2} and r["lat_ms"]["max"] < 3000, short(r)
    assert any("per-try timeout" in d for d in r["details"]), r["details"]
    r = bare.unary(2, rpc_timeout=0.1)
    assert r["errors"] == {"DEADLINE_EXCEEDED": 2}, short(r)
    assert not any("per-try timeout" in d for d in r["details"]), r["details"]


def test_hedging_cuts_the_tail_and_cancels_the_losers(bed, client):
    n = 800
    cancelled0 = sum(bed.stats(p).get("cancelled", 0) for p in bed.hs)
    # Few in flight: the client and the pods share the machine's cores, and
    # their own queueing would blur the tail the stalls make.
    plain = client(bed.unhedged).unary(n, concurrency=4, rpc_timeout=30, timeout=300)
    hedges0 = bed.metric("h2split_service_hedges_total", bed.hedged)
    hedged = client(bed.hedged).unary(n, concurrency=4, rpc_timeout=30, timeout=300)
    assert plain["ok"] == n and hedged["ok"] == n, (short(plain), short(hedged))
    p99, p99_h = plain["lat_ms"]["p99"], hedged["lat_ms"]["p99"]
    print(f"hedging: p99 {p99:.1f} ms without, {p99_h:.1f} ms with "
          f"(ratio {p99_h / p99:.2f}); p50 {plain['lat_ms']['p50']:.1f} / "
          f"{hedged['lat_ms']['p50']:.1f} ms")
    assert p99 >= 200, f"the stalls should set the p99 without hedging: {plain['lat_ms']}"
    assert p99_h <= 0.3 * p99, \
        f"p99 {p99_h} ms with hedging, {p99} ms without: {hedged['lat_ms']}, {plain['lat_ms']}"
    hedges = bed.metric("h2split_service_hedges_total", bed.hedged) - hedges0
    assert hedges >= n * 0.05 * 0.5, f"{hedges:g} hedges for {n} RPCs, 5% of them stalled"
    # The stalled attempts that lost were cancelled: their pods saw RST_STREAM
    # (grpc: the RPC no longer active when the handler woke up).
    cancelled = sum(bed.stats(p).get("cancelled", 0) for p in bed.hs) - cancelled0
    assert cancelled >= n * 0.05 * 0.5, \
        f"only {cancelled} stalled attempts were cancelled after {hedges:g} hedges"


def test_hedging_non_fatal_status_lets_the_others_answer(bed, client):
    # The attempt on dead-0 answers UNAVAILABLE at once. Non-fatal: the next
    # attempt goes at once (not after the 3 s delay) to ok-0 and answers.
    before = bed.served([bed.dead[0]])
    r = client(bed.hedge_nf).unary(40, concurrency=4, rpc_timeout=30)
    hit = bed.served([bed.dead[0]]) - before
    assert r["ok"] == 40 and hit > 0, (hit, short(r))
    assert r["lat_ms"]["max"] < 2000, f"the next hedge waited for hedgingDelay: {short(r)}"
    # Fatal (not listed): the first answer is the RPC's.
    before = bed.served([bed.dead[0]])
    r = client(bed.hedge_fatal).unary(40, concurrency=4, rpc_timeout=30)
    hit = bed.served([bed.dead[0]]) - before
    assert r["errors"].get("UNAVAILABLE", 0) == hit > 0, (hit, short(r))
