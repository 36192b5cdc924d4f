# SPDX-License-Identifier: Apache-2.0
"""Balancing by how backends behave, on the simulated node: the ewma policy
steers RPCs away from a slow pod and from one that stalls (stops reading),
outlier ejection takes a pod that answers UNAVAILABLE out of rotation until
it is healthy again, and one that fails every other RPC too, a pod added to a Service under load gets RPCs on
channels that were open before it came, weights split RPCs by pod, circuit
breaking caps the streams in flight, queues a bounded number and fails the
rest fast, and active health checks take a NOT_SERVING pod out and back,
also while other endpoints of the Service black-hole the probes.
Assertions compare what the pods served, what the clients got and what
h2splitd reports (h2splitctl endpoints, /metrics); latencies and shares under
load are measured by tests/bench/balance.py, not asserted here. The one
timing bound (test_health_checks_of_black_holes_do_not_delay_the_others) is
a sequential checker's floor, HOLES probe timeouts, not a tuned number.
"""

import ipaddress
import json
import re
import signal
import time

import pytest

import testbed
from test_splitter import Daemon, short

SLOW_MS = 150
N = 300


class Bed:
    """Services ``latency`` (fast-0, fast-1 and slow-0, which takes 150 ms per
    RPC), ``flaky`` (ok-0, ok-1 and bad-0, which fails every RPC with
    UNAVAILABLE until SIGUSR1), ``halfbad`` (ok-0, ok-1 and half-0, which
    fails every other RPC with UNAVAILABLE), ``capped`` (held-0; 2 in flight, 3 queued),
    ``capped-ep`` (the same by the per-endpoint cap),
    ``weighted`` (heavy-0 weighs 3, light-0 1), ``checked`` (probed-0 and
    probed-1, health-checked every 200 ms; SIGUSR2 toggles NOT_SERVING),
    ``stalling`` (fast-0, fast-1 and stall-0, which a test stops with SIGSTOP)
    and ``growing`` (fast-0, fast-1; new-0 joins in a test), one client pod,
    h2splitd (restarted per test)."""

    def __init__(self, node, build_dir):
        self.node = node
        self.fast = node.add_server_pods(["fast-0", "fast-1"])
        self.slow = node.add_server_pods(["slow-0"], delay_ms=SLOW_MS)
        self.ok = node.add_server_pods(["ok-0", "ok-1"])
        self.bad = node.add_server_pods(["bad-0"], args=("--fail-status", "14"))[0]
        self.half = node.add_server_pods(["half-0"], args=("--fail-status", "14",
                                                           "--fail-every", "2"))[0]
        self.held = node.add_server_pods(["held-0"])
        self.heavy = node.add_server_pods(["heavy-0", "light-0"])
        self.probed = node.add_server_pods(["probed-0", "probed-1"])
        self.stall, self.new = node.add_server_pods(["stall-0", "new-0"])
        self.client = node.add_pod("client-0")
        self.latency = node.add_service("latency", pods=self.fast + self.slow)
        self.flaky = node.add_service("flaky", pods=self.ok + [self.bad])
        self.halfbad = node.add_service("halfbad", pods=self.ok + [self.half])
        # 2 streams in flight, 3 more may wait; RPCs ask held-0 to sit on them.
        self.capped = node.add_service("capped", pods=self.held, annotations={
            "h2split.io/max-inflight": "2", "h2split.io/max-pending": "3"})
        # The same by the per-endpoint cap (held-0 is its one endpoint).
        self.capped_ep = node.add_service("capped-ep", pods=self.held, annotations={
            "h2split.io/max-inflight-per-endpoint": "2", "h2split.io/max-pending": "3"})
        self.weighted = node.add_service("weighted", pods=self.heavy, annotations={
            "h2split.io/weights": "heavy-0=3,light-0=1"})
        self.checked = node.add_service("checked", pods=self.probed, annotations={
            "h2split.io/health-check": "grpc",
            "h2split.io/health-check-interval": "200ms"})
        self.stalling = node.add_service("stalling", pods=self.fast + [self.stall])
        self.growing = node.add_service("growing", pods=self.fast)
        self.daemon = Daemon(node, build_dir)

    def restart(self, *args):
        self.daemon.stop()
        return self.daemon.start("--workers", "1", "--drain-timeout", "1", *args)


@pytest.fixture(scope="module")
def bed(module_node, build_dir):
    return Bed(module_node, build_dir)


def ctl_endpoints(bed, *args):
    """`h2splitctl endpoints` inside the node netns: stdout."""
    r = bed.node.run([bed.daemon.ctl_binary, "--bpffs", bed.node.bpffs, *args, "endpoints"],
                     check=False)
    assert r.returncode == 0, f"h2splitctl endpoints: rc={r.returncode} {r.stderr}"
    return r.stdout


def endpoint_of(bed, pod, service=None):
    """The `h2splitctl -o json endpoints` entry of ``pod`` (in ``service``, a
    Service's name, if given: a pod may back several)."""
    for svc in json.loads(ctl_endpoints(bed, "-o", "json"))["services"]:
        name = svc["service"].split("/", 1)[-1].split(":", 1)[0]  # ns/name[:port]
        for ep in svc["endpoints"]:
            if ep["pod"] == pod and service in (None, name):
                return ep
    raise AssertionError(f"{pod} not in h2splitctl endpoints of {service or 'any service'}")


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
    # slow-0 is measured at 150 ms after its first answers and loses every
    # comparison against the fast pods after that.
    assert ew * 5 < rr, (f"ewma: slow-0 served {ew} of {N}, want well under a fifth of "
                         f"round_robin's {rr}: {short(r_ew)}")
    assert set(r_ew["pods"]) >= {"fast-0", "fast-1"}, short(r_ew)
    # What ewma knew, as an operator sees it: each pod's estimate and its
    # answers' jitter. slow-0 stands out of the fast pods' estimates by more
    # than twice the sum of the jitters (else ewma would count them as
    # equal, and in-flight counts would decide).
    slow, fast = endpoint_of(bed, "slow-0", "latency"), endpoint_of(bed, "fast-0", "latency")
    assert fast["ewma_jitter_us"] > 0 and slow["ewma_jitter_us"] > 0, (slow, fast)
    assert slow["ewma_latency_us"] - fast["ewma_latency_us"] > \
        2 * (slow["ewma_jitter_us"] + fast["ewma_jitter_us"]), (slow, fast)


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

        # Between ejections bad-0 fails its way back out: keep calling until
        # the operator sees it ejected.
        testbed.wait_for(lambda: c.unary(5) and endpoint_of(bed, "bad-0")["state"] == "ejected",
                         30, "h2splitctl endpoints to show bad-0 ejected")
        ep = endpoint_of(bed, "bad-0")
        assert ep["ejected_until"] > 0 and ep["ejections"] >= 1, ep
        assert ep["ewma_latency_us"] > 0, ep
        assert endpoint_of(bed, "ok-0")["state"] == "usable", endpoint_of(bed, "ok-0")
        table = ctl_endpoints(bed)
        assert "STATE" in table.splitlines()[0], table
        assert any("bad-0" in l and " ejected " in l for l in table.splitlines()), table
        ejected = d.metrics()
        assert ejected.get("h2split_endpoint_ejected", pod="bad-0") == 1, ejected.text[-2000:]
        assert ejected.get("h2split_endpoint_ejected", pod="ok-0") == 0, d.notable()

        bed.bad.server.send_signal(signal.SIGUSR1)  # healed
        testbed.wait_for(lambda: c.unary(10)["pods"].get("bad-0", 0) > 0, 30,
                         "bad-0 to serve again once its ejection ends")
        r = c.unary(N)
        ep = endpoint_of(bed, "bad-0")
        assert ep["state"] == "usable" and ep["consecutive_failures"] == 0, ep
        assert ep["ejected_until"] == 0, ep
    assert r["ok"] == N and not r["errors"], short(r)
    assert r["pods"] == {"ok-0": 100, "ok-1": 100, "bad-0": 100}, \
        f"healed bad-0 back in round robin: {short(r)}"


def half_failures(bed, *args):
    """UNAVAILABLE answers of N sequential RPCs on the halfbad Service, under
    round_robin (half-0 gets every third RPC and fails every other one)."""
    d = bed.restart("--lb-policy", "round_robin", *args)
    with bed.client.grpc_client(bed.halfbad.target4) as c:
        r = c.unary(N)
    assert set(r["errors"]) <= {"UNAVAILABLE"}, short(r)
    assert r["ok"] + r["errors"].get("UNAVAILABLE", 0) == N, short(r)
    return r["errors"].get("UNAVAILABLE", 0), r, d


def test_pod_failing_every_other_rpc_is_ejected_by_its_failure_rate(bed):
    # Never two failures in a row: the consecutive rule alone never fires,
    # and half of half-0's 100 RPCs fail.
    failed, r, d = half_failures(bed, "--outlier-failure-percent", "0")
    assert failed == N // 6, f"want every other RPC of half-0 failed: {short(r)}"
    assert not d.metrics().get("h2split_outlier_ejections_total"), d.notable()
    # Half of its last 20 answers failed: ejected at the 10th or 11th failure
    # (depending on which came first), for the rest of the run.
    failed, r, d = half_failures(bed)
    assert 10 <= failed <= 11, f"want half-0 ejected once 10 of 20 failed: {short(r)}"
    assert d.metrics().get("h2split_outlier_ejections_total") == 1, d.notable()
    assert endpoint_of(bed, "half-0")["state"] == "ejected", endpoint_of(bed, "half-0")


WEIGHTED_N = 4000


@pytest.mark.parametrize("policy", ["least_request", "round_robin"])
def test_weights_annotation_splits_rpcs_by_pod_weight(bed, policy):
    """heavy-0=3,light-0=1: each pod serves its weight's share of the RPCs,
    within 10% of that share. One RPC at a time, so the weights alone decide
    (with streams in flight, least_request compares in-flight streams per
    unit of weight). The draws are random: at 4000 RPCs light-0's 1000 has a
    standard deviation under 28 (binomial, least_request; less for
    round_robin's walk), so 10% is more than 3.5 of them."""
    bed.restart("--lb-policy", policy)
    with bed.client.grpc_client(bed.weighted.target4) as c:
        r = c.unary(WEIGHTED_N)
    assert r["ok"] == WEIGHTED_N and not r["errors"], short(r)
    want = {"heavy-0": WEIGHTED_N * 3 // 4, "light-0": WEIGHTED_N // 4}
    assert set(r["pods"]) == set(want), short(r)
    for pod, n in want.items():
        assert abs(r["pods"][pod] - n) <= n // 10, \
            f"{policy}: {pod} served {r['pods'][pod]} of {WEIGHTED_N}, want {n} +- 10%: {short(r)}"


# Long enough that all RPCs of a batch are in (running or queued) before the
# first two finish; the queued ones then run two at a time.
HOLD_MS = 1500


def limits_hit(m):
    """h2split_limit_exceeded_total by limit, the ones above 0."""
    return {lab["limit"]: v for lab, v in m.rows("h2split_limit_exceeded_total") if v}


@pytest.mark.parametrize("cap", ["service", "endpoint"])
def test_circuit_breaker_queues_up_to_max_pending_and_fails_the_rest_fast(bed, cap):
    d = bed.restart("--pending-timeout", "60000")
    svc = bed.capped if cap == "service" else bed.capped_ep
    with bed.client.grpc_client(svc.target4) as c:
        r = c.unary(10, concurrency=10, delay_ms=HOLD_MS)
    # 2 in flight + 3 queued succeed; the other 5 find the queue full.
    assert r["ok"] == 5 and r["errors"] == {"UNAVAILABLE": 5}, short(r)
    assert all("h2split: circuit breaker" in x for x in r["details"]), r["details"]
    m = d.metrics()
    label = f"default/{svc.name}:50051"
    assert m.get("h2split_circuit_breaker_rejections_total", service=label,
                 reason="queue_full") == 5, d.notable()
    assert m.get("h2split_circuit_breaker_rejections_total", service=label,
                 reason="timeout") == 0, d.notable()
    assert m.get("h2split_service_pending", service=label) == 0, d.notable()
    # 8 streams found the cap (each once, queued or not), 5 the queue full.
    assert limits_hit(m) == {f"inflight_per_{cap}": 8, "pending": 5}, d.notable()


def test_circuit_breaker_wait_times_out_as_unavailable(bed):
    d = bed.restart("--pending-timeout", "300")
    with bed.client.grpc_client(bed.capped.target4) as c:
        r = c.unary(5, concurrency=5, delay_ms=4 * HOLD_MS)
    assert r["ok"] == 2 and r["errors"] == {"UNAVAILABLE": 3}, short(r)
    m = d.metrics()
    assert m.get("h2split_circuit_breaker_rejections_total",
                 service="default/capped:50051", reason="timeout") == 3, d.notable()
    assert limits_hit(m) == {"inflight_per_service": 3, "pending_timeout": 3}, d.notable()


def test_deadline_while_queued_frees_the_place(bed):
    d = bed.restart("--pending-timeout", "60000")
    with bed.client.grpc_client(bed.capped.target4) as c:
        # Two hold the slots past their deadline, two wait and give up.
        r = c.unary(4, concurrency=4, delay_ms=4 * HOLD_MS, rpc_timeout=1)
        assert r["errors"] == {"DEADLINE_EXCEEDED": 4}, short(r)
        testbed.wait_for(lambda: d.metrics().get("h2split_service_pending",
                                                 service="default/capped:50051") == 0,
                         10, "the queue to be empty")
        # The in-flight slots come free as held-0 finishes; then all fit again.
        testbed.wait_for(lambda: c.unary(2, concurrency=2)["ok"] == 2, 30,
                         "capped to serve again")
        r = c.unary(5, concurrency=5, delay_ms=HOLD_MS)
    assert r["ok"] == 5 and not r["errors"], short(r)


def test_active_health_check_takes_a_not_serving_pod_out_and_back(bed):
    d = bed.restart()
    p1 = bed.probed[1]
    with bed.client.grpc_client(bed.checked.target4) as c:
        r = c.unary(40)
        assert r["ok"] == 40 and r["pods"].get("probed-1", 0) > 0, short(r)

        p1.server.send_signal(signal.SIGUSR2)  # NOT_SERVING
        testbed.wait_for(lambda: endpoint_of(bed, "probed-1")["state"] == "unhealthy", 10,
                         "h2splitctl endpoints to show probed-1 unhealthy")
        r = c.unary(60)
        assert r["ok"] == 60 and r["pods"] == {"probed-0": 60}, \
            f"no new RPCs for a NOT_SERVING pod: {short(r)}"
        assert endpoint_of(bed, "probed-0")["state"] == "usable", endpoint_of(bed, "probed-0")

        # Both NOT_SERVING: never none, all of them rather.
        bed.probed[0].server.send_signal(signal.SIGUSR2)
        testbed.wait_for(lambda: endpoint_of(bed, "probed-0")["state"] == "unhealthy", 10,
                         "probed-0 unhealthy too")
        r = c.unary(20)
        assert r["ok"] == 20 and not r["errors"], short(r)
        bed.probed[0].server.send_signal(signal.SIGUSR2)

        p1.server.send_signal(signal.SIGUSR2)  # SERVING again
        testbed.wait_for(lambda: all(endpoint_of(bed, p)["state"] == "usable"
                                     for p in ("probed-0", "probed-1")), 10,
                         "both pods usable again")
        r = c.unary(60)
    assert r["ok"] == 60 and r["pods"].get("probed-1", 0) > 0, \
        f"probed-1 back in rotation: {short(r)}"
    assert "endpoint_unhealthy" in "\n".join(d.proc.lines), d.notable()


HOLES = 8
PROBE_TIMEOUT_S = 1.0  # HEALTH_TIMEOUT_MS in userspace/balancer/health.h


def test_health_checks_of_black_holes_do_not_delay_the_others(bed):
    """A health-checked Service with HOLES endpoints whose pods drop every
    packet (so each probe of them runs into its 1 s timeout) and one pod,
    turn-0, that sorts after them. Probed one after another, every verdict
    on turn-0 would queue behind HOLES timeouts: at start the holes would be
    judged first, and two probes of turn-0 in a row (what brings it back)
    would be at least HOLES timeouts apart. Probed at once, turn-0's verdicts
    come within about an interval whatever the holes do, and RPCs go to it
    only."""
    node = bed.node
    holes, turn, svc = [], None, None
    try:
        for i in range(HOLES):
            holes.append(node.add_pod(f"hole-{i}"))
            holes[-1].run(["iptables", "-w", "-A", "INPUT", "-j", "DROP"])
        turn = node.add_server_pods(["turn-0"])[0]
        assert all(ipaddress.ip_address(h.ip4) < ipaddress.ip_address(turn.ip4) for h in holes), \
            "turn-0 must sort after the holes (the checker's list is in address order)"
        turn.server.send_signal(signal.SIGUSR2)  # NOT_SERVING from the first probe on
        svc = node.add_service("holed", pods=holes + [turn], annotations={
            "h2split.io/health-check": "grpc",
            "h2split.io/health-check-interval": "200ms"})
        bed.daemon.stop()
        t0 = time.monotonic()
        d = bed.daemon.start("--workers", "1", "--drain-timeout", "1")
        testbed.wait_for(lambda: endpoint_of(bed, "turn-0")["state"] == "unhealthy", 30,
                         "turn-0 (NOT_SERVING) unhealthy")
        first = time.monotonic() - t0
        verdicts = [ln for ln in d.proc.lines if "endpoint_unhealthy" in ln
                    and ("pod=turn-0" in ln or "pod=hole-" in ln)]
        assert verdicts and "pod=turn-0" in verdicts[0], \
            f"turn-0 must be judged before the holes time out: {verdicts[:3]}"
        assert first < HOLES * PROBE_TIMEOUT_S, \
            f"turn-0 judged {first:.1f} s after the start, a sequential checker's floor"
        testbed.wait_for(lambda: all(endpoint_of(bed, h.name)["state"] == "unhealthy"
                                     for h in holes), 30, "every hole unhealthy")

        turn.server.send_signal(signal.SIGUSR2)  # SERVING
        t1 = time.monotonic()
        testbed.wait_for(lambda: endpoint_of(bed, "turn-0")["state"] == "usable", 30,
                         "turn-0 usable again")
        back = time.monotonic() - t1
        assert back < HOLES * PROBE_TIMEOUT_S, \
            (f"turn-0 back after {back:.1f} s: its two SERVING probes in a row were "
             f"as far apart as a sequential checker's round over {HOLES} holes")
        with bed.client.grpc_client(svc.target4) as c:
            r = c.unary(30)
        assert r["ok"] == 30 and r["pods"] == {"turn-0": 30}, \
            f"RPCs only to the pod that answers its probes: {short(r)}"

        turn.server.send_signal(signal.SIGUSR2)  # NOT_SERVING while the holes time out
        t2 = time.monotonic()
        testbed.wait_for(lambda: endpoint_of(bed, "turn-0")["state"] == "unhealthy", 30,
                         "turn-0 unhealthy again")
        again = time.monotonic() - t2
        assert again < HOLES * PROBE_TIMEOUT_S, f"turn-0 judged after {again:.1f} s"
        print(f"black holes: turn-0 judged {first:.2f} s after start, back in {back:.2f} s, "
              f"out again in {again:.2f} s")
    finally:
        if svc is not None:
            node.remove_service(svc)
        for p in holes + ([turn] if turn else []):
            node.remove_pod(p.name)


def ctl_services(bed, *args):
    """`h2splitctl services` inside the node netns: (stdout, stderr)."""
    r = bed.node.run([bed.daemon.ctl_binary, "--bpffs", bed.node.bpffs, *args, "services"],
                     check=False)
    assert r.returncode == 0, f"h2splitctl services: rc={r.returncode} {r.stderr}"
    return r.stdout, r.stderr


def test_services_show_the_balancing_settings_in_force(bed):
    """/services and `h2splitctl services` show, per Service, the balancing
    settings in force: the daemon's flags for a Service without annotations
    (latency), each annotation over its flag for one that sets them all
    (tuned), and "?" from the BPF map alone once h2splitd is gone."""
    tuned = bed.node.add_service("tuned", pods=bed.fast, annotations={
        "h2split.io/lb-policy": "ewma",
        "h2split.io/max-inflight-per-endpoint": "7",
        "h2split.io/max-inflight": "0",
        "h2split.io/max-pending": "0",
        "h2split.io/slow-start": "0",
        "h2split.io/health-check": "grpc",
        "h2split.io/health-check-service": "echo.Echo",
        "h2split.io/health-check-interval": "2s",
        "h2split.io/weights": "fast-0=2"})
    try:
        d = bed.restart("--lb-policy", "round_robin", "--max-inflight-per-endpoint", "40",
                        "--max-inflight-per-service", "300", "--max-pending", "9",
                        "--slow-start", "1500")
        d.wait_usable(tuned, 2)
        defaults = {"policy": "round_robin", "policy_source": "default",
                    "max_inflight_per_endpoint": 40, "max_inflight_per_service": 300,
                    "max_pending": 9, "slow_start_ms": 1500, "health_check": "off",
                    "weights": False}
        annotated = {"policy": "ewma", "policy_source": "annotation",
                     "max_inflight_per_endpoint": 7, "max_inflight_per_service": 0,
                     "max_pending": 0, "slow_start_ms": 0, "health_check": "grpc",
                     "health_check_service": "echo.Echo", "health_check_interval_ms": 2000,
                     "weights": True}
        admin = d.services()
        assert admin["latency"]["balancing"] == defaults, admin["latency"]
        assert admin["tuned"]["balancing"] == annotated, admin["tuned"]
        assert admin["tuned"]["lb_policy"] == "ewma", admin["tuned"]  # the older field stays

        out, _ = ctl_services(bed, "-o", "json")
        rows = {(e["vip"], e.get("service")): e for e in json.loads(out)}
        assert rows[(bed.latency.vip4, "default/latency:50051")]["balancing"] == defaults, rows
        t = rows[(tuned.vip4, "default/tuned:50051")]
        assert t["balancing"] == annotated and t["enabled"], t
        assert t["service_id"] == admin["tuned"]["id"], (t, admin["tuned"])

        table, _ = ctl_services(bed)
        assert re.search(r"\bdefault/latency:50051\s+round_robin\s+40\s+300\s+9\s+1500ms\s+"
                         r"off\s+no\s+off$", table, re.M), table
        assert re.search(r"\bdefault/tuned:50051\s+ewma\s+7\s+-\s+-\s+off\s+"
                         r"grpc/2s/echo\.Echo\s+yes\s+off$", table, re.M), table

        d.stop()
        table, err = ctl_services(bed)
        assert re.search(rf"^{re.escape(tuned.vip4)}:50051\s+{t['service_id']}\s+yes\s+\?",
                         table, re.M), table
        assert "balancing settings not shown" in err, err
    finally:
        bed.node.remove_service(tuned)


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
            # At most the one RPC that shows it stalled, in whichever batch ewma
            # happens to draw it (a pod that already looks slower may not be
            # drawn in the first).
            assert after - before <= 1, \
                f"ewma sent {after - before} RPCs to the stalled pod, want at most the one " \
                f"that showed it: {short(first)} then {short(then)}"


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
