# SPDX-License-Identifier: Apache-2.0
"""Locality on the simulated node (issue #21): Services that prefer their
zone or node keep RPCs there, fail over when the near pods cannot serve
(killed, full) and come back ramped; EndpointSlice hints decide the zone set;
internalTrafficPolicy: Local never leaves the node; sessionAffinity: ClientIP
is left to kube-proxy; with no zone known nothing changes.

Locality is simulated: every pod runs on this one node, and the endpoints
claim the nodeName and zone a test gives them. This node is the bed's node
netns name (``--node-name``); its zone comes from its Node object in the
services file (``node.set_zone``) or ``--zone``. Assertions are on the pods
that served the RPCs, the statuses the clients got, and what h2splitd
reports (/metrics, /endpoints, its log).
"""

import json
import time

import pytest

import testbed
from test_splitter import Daemon

ZONE, FAR = "z1", "z2"
N = 1000


class Bed:
    """local-0 runs on this node (zone z1); near-0, near-1, kn-0 and kn-1 on
    node-b (z1); far-0..far-5 on node-c/node-d (z2). Services:
    ``zonal`` PreferSameZone (near-0, near-1, far-0, far-1), ``nodal``
    PreferSameNode (local-0, near-0, far-0, far-1), ``failover`` PreferSameZone
    (kn-0, kn-1, far-0, far-1), ``spill`` PreferSameZone with 2 streams per
    endpoint (near-0 and far-0..far-5), ``hinted`` (hints only: far-0 is
    hinted to z1, the others to z2), ``local`` internalTrafficPolicy Local
    (local-0, near-0, far-0), ``affine`` sessionAffinity ClientIP (near-0,
    far-0), ``plain`` (near-0, far-0: no locality field)."""

    def __init__(self, node, build_dir):
        self.node = node
        self.local = node.add_server_pods(["local-0"], zone=ZONE)
        self.near = node.add_server_pods(["near-0", "near-1"], node="node-b", zone=ZONE)
        self.kn = node.add_server_pods(["kn-0", "kn-1"], node="node-b", zone=ZONE)
        self.far = node.add_server_pods([f"far-{i}" for i in range(3)], node="node-c", zone=FAR)
        self.far += node.add_server_pods([f"far-{i}" for i in range(3, 6)], node="node-d",
                                         zone=FAR)
        self.client = node.add_pod("client-0")
        node.set_zone(ZONE)
        near0, far01 = self.near[:1], self.far[:2]
        self.zonal = node.add_service("zonal", pods=self.near + far01,
                                      traffic_distribution="PreferSameZone")
        self.nodal = node.add_service("nodal", pods=self.local + near0 + far01,
                                      traffic_distribution="PreferSameNode")
        self.failover = node.add_service("failover", pods=self.kn + far01,
                                         traffic_distribution="PreferSameZone")
        self.spill = node.add_service("spill", pods=near0 + self.far,
                                      traffic_distribution="PreferSameZone", annotations={
                                          "h2split.io/max-inflight-per-endpoint": "2"})
        self.hinted = node.add_service("hinted", pods=self.near + far01, hints={
            "near-0": {"forZones": [FAR]}, "near-1": {"forZones": [FAR]},
            "far-0": {"forZones": [ZONE]}, "far-1": {"forZones": [FAR]}})
        self.localsvc = node.add_service("local", pods=self.local + near0 + self.far[:1],
                                         internal_traffic_policy="Local")
        self.affine = node.add_service("affine", pods=near0 + self.far[:1],
                                       session_affinity="ClientIP")
        self.plain = node.add_service("plain", pods=near0 + self.far[:1])
        self.daemon = Daemon(node, build_dir)

    def restart(self, *args, node_name=True):
        self.daemon.stop()
        extra = ["--node-name", self.node.netns] if node_name else []
        return self.daemon.start("--workers", "1", "--drain-timeout", "1", *extra, *args)

    def log(self):
        with open(self.daemon.proc.log_path, errors="replace") as f:
            return f.read()


@pytest.fixture(scope="module")
def bed(module_node, build_dir):
    b = Bed(module_node, build_dir)
    b.restart()
    yield b
    b.daemon.stop()


def share(pods, names):
    return sum(pods.get(n, 0) for n in names)


def test_prefer_same_zone_keeps_rpcs_in_the_zone(bed):
    with testbed.Client(bed.client, bed.zonal.target4) as c:
        r = c.unary(N)
    assert r["ok"] == N, r
    near = share(r["pods"], ["near-0", "near-1"])
    print(f"PreferSameZone: {near}/{N} RPCs to the zone's pods {r['pods']}")
    assert near >= 0.99 * N, r["pods"]
    assert min(r["pods"].get("near-0", 0), r["pods"].get("near-1", 0)) > N / 4, r["pods"]
    m = bed.daemon.metrics()
    svc = f"default/zonal:{bed.zonal.port}"
    assert m.get("h2split_service_requests_total", service=svc, locality="zone") >= near
    assert m.get("h2split_service_requests_total", service=svc, locality="other") <= N - near
    code, body = bed.daemon.admin("/endpoints")
    assert code == 200, body
    eps = {e["pod"]: e for s in json.loads(body)["services"] if s["service"].startswith(
        "default/zonal:") for e in s["endpoints"]}
    assert eps["near-0"]["zone"] == ZONE and eps["near-0"]["node"] == "node-b", eps
    assert eps["far-0"]["zone"] == FAR and eps["far-0"]["locality"] == "other", eps
    table = bed.node.run([bed.daemon.ctl_binary, "--bpffs", bed.node.bpffs, "endpoints"]).stdout
    assert "ZONE" in table.splitlines()[0], table
    assert any("near-0" in l and " node-b " in l and f" {ZONE} " in l
               for l in table.splitlines()), table


def test_prefer_same_node_keeps_rpcs_on_the_node(bed):
    with testbed.Client(bed.client, bed.nodal.target4) as c:
        r = c.unary(N)
    assert r["ok"] == N, r
    print(f"PreferSameNode: {r['pods'].get('local-0', 0)}/{N} RPCs to this node's pod")
    assert r["pods"].get("local-0", 0) >= 0.99 * N, r["pods"]
    m = bed.daemon.metrics()
    assert m.get("h2split_service_requests_total", service=f"default/nodal:{bed.nodal.port}",
                 locality="node") >= 0.99 * N


def test_near_pods_killed_fail_over_and_come_back(bed):
    near = ["kn-0", "kn-1"]
    with testbed.Client(bed.client, bed.failover.target4) as c:
        r = c.unary(200)
        assert share(r["pods"], near) == 200, r["pods"]
        job = c.loop(pace_ms=5)
        c.wait_progress(50)
        for p in bed.kn:
            p.kill()
        killed = c.progress()
        after = c.wait_progress(300)
        # Every RPC after the kill went far; failed: at most those in flight
        # on the killed pods (the loop runs one RPC at a time).
        assert share(after["pods"], near) - share(killed["pods"], near) <= 2, after
        failed = sum(after["errors"].values())
        print(f"failover: {failed} RPCs failed after killing both near pods")
        assert failed <= 2, after
        for p in bed.kn:
            p.start_grpc_server()
        t0 = time.monotonic()
        last = [c.progress()]

        def back():
            p = c.progress()
            prev = last[0]
            n = p["n"] - prev["n"]
            if n < 100:
                return False
            last[0] = p
            return (share(p["pods"], near) - share(prev["pods"], near)) >= 0.9 * n
        testbed.wait_for(back, 60, "the near pods to take 90% of the RPCs again")
        print(f"failback: near share back to >= 90% {time.monotonic() - t0:.1f}s "
              "after the pods restarted")
        summary = c.stop_loop(job)
    assert sum(summary["errors"].values()) <= 2, summary
    m = bed.daemon.metrics()
    assert m.get("h2split_locality_failovers_total", service=f"default/failover:{bed.failover.port}",
                 reason="unavailable") > 0, m.text[-3000:]
    log = bed.log()
    assert "locality_failover" in log and "locality_failback" in log


def test_spill_past_the_near_in_flight_cap(bed):
    with testbed.Client(bed.client, bed.spill.target4) as c:
        r = c.unary(14, concurrency=14, delay_ms=300)
    assert r["ok"] == 14, r  # none queued into --pending-timeout
    assert r["pods"].get("near-0", 0) == 2, r["pods"]
    assert share(r["pods"], [f"far-{i}" for i in range(6)]) == 12, r["pods"]
    m = bed.daemon.metrics()
    assert m.get("h2split_locality_failovers_total", service=f"default/spill:{bed.spill.port}",
                 reason="full") >= 12
    assert m.get("h2split_circuit_breaker_rejections_total", service=f"default/spill:{bed.spill.port}") == 0


def test_hints_decide_the_zone_set(bed):
    with testbed.Client(bed.client, bed.hinted.target4) as c:
        r = c.unary(200)
    assert r["ok"] == 200, r
    # far-0 runs in z2 but is hinted to this zone: it is the zone set.
    assert r["pods"].get("far-0", 0) >= 198, r["pods"]


def test_internal_traffic_policy_local_never_leaves_the_node(bed):
    with testbed.Client(bed.client, bed.localsvc.target4) as c:
        r = c.unary(200)
        assert r["pods"] == {"local-0": 200}, r
        bed.node.set_endpoints(bed.localsvc, bed.near[:1] + bed.far[:1])
        r = c.unary(20)
    bed.node.set_endpoints(bed.localsvc, bed.local + bed.near[:1] + bed.far[:1])
    assert r["ok"] == 0 and r["pods"] == {}, r
    assert r["errors"] == {"UNAVAILABLE": 20}, r
    assert any("internalTrafficPolicy: Local" in d for d in r["details"]), r["details"]


def test_session_affinity_client_ip_is_left_to_kube_proxy(bed):
    assert "affine" not in bed.daemon.services(), bed.daemon.services()
    assert "service_left_to_kube_proxy service=default/affine" in bed.log()
    with testbed.Client(bed.client, bed.affine.target4) as c:
        r = c.unary(50)
    # kube-proxy's DNAT pins the channel's connection, and so every RPC, to one pod.
    assert r["ok"] == 50 and len(r["pods"]) == 1, r


def test_service_without_locality_fields_spreads_as_before(bed):
    with testbed.Client(bed.client, bed.plain.target4) as c:
        r = c.unary(100)
    assert r["ok"] == 100, r
    assert r["pods"].get("near-0", 0) == 50 and r["pods"].get("far-0", 0) == 50, r["pods"]


def test_no_zone_known_routes_as_today_and_says_so_once(bed):
    bed.node.set_zone(None)
    try:
        d = bed.restart()
        with testbed.Client(bed.client, bed.zonal.target4) as c:
            r = c.unary(400)
        assert r["ok"] == 400, r
        for p in ("near-0", "near-1", "far-0", "far-1"):
            assert r["pods"].get(p, 0) == 100, r["pods"]  # least_request takes turns
        bed.node.set_endpoints(bed.zonal, bed.near + bed.far[:2])  # another state
        assert bed.log().count("locality_zone_unknown") == 1, d.proc.log_tail(50)
        # --zone gives it back without the Node label.
        bed.restart("--zone", ZONE)
        with testbed.Client(bed.client, bed.zonal.target4) as c:
            r = c.unary(200)
        assert share(r["pods"], ["near-0", "near-1"]) == 200, r["pods"]
        assert "locality_zone node=" in bed.log() and "from=--zone" in bed.log()
    finally:
        bed.node.set_zone(ZONE)
        bed.restart()
