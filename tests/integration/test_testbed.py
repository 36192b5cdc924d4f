# SPDX-License-Identifier: Apache-2.0
"""The simulated node reproduces the problem h2split fixes, and cleans up after itself.

Without h2split (kube-proxy alone): one gRPC channel is one TCP connection,
DNATed once, so every RPC on it lands on one pod; adding pods does nothing
for channels already open. These tests pin that "before" picture down so
later tests can show h2split changing it.
"""

import collections
import json
import os
import signal
import subprocess
import sys

import pytest

import testbed
from testbed import peer_addr

SERVERS = ["server-0", "server-1", "server-2"]


def only_pod(summary):
    """The single pod that served every message of ``summary`` (asserts it is one)."""
    assert summary["errors"] == {}, summary
    assert summary["ok"] == summary["n"], summary
    assert len(summary["pods"]) == 1, f"RPCs of one channel spread over pods: {summary}"
    return next(iter(summary["pods"]))


def only_peer(summary):
    assert len(summary["peers"]) == 1, f"more than one connection: {summary['peers']}"
    return next(iter(summary["peers"]))


def server_unary_counts(node, pods):
    """Unary RPCs each pod's server has handled, asked directly (pod IP, not the VIP)."""
    clients = [testbed.Client(node, f"{p.ip4}:{testbed.GRPC_PORT}", wait=False) for p in pods]
    try:
        for c in clients:
            c.wait_ready()
        return {p.name: c.stats()["counts"]["Unary"] for p, c in zip(pods, clients)}
    finally:
        for c in clients:
            c.close()


def test_one_channel_pins_all_rpcs_to_one_pod(node):
    servers = node.add_server_pods(SERVERS)
    svc = node.add_service("echo", 50051, pods=servers)
    client_pod = node.add_pod("client-0")
    client = client_pod.grpc_client(svc.target4)

    r = client.unary(300)
    pinned = only_pod(r)
    assert r["messages"] == 300
    assert peer_addr(only_peer(r))[0] == client_pod.ip4  # no SNAT: the pod's own IP

    # Ten more client pods, one channel each: RPCs follow connections.
    pods = [node.add_pod(f"client-{i}") for i in range(1, 11)]
    clients = testbed.open_clients(pods, svc.target4)
    results = testbed.unary_all(clients, 30)
    landed = collections.Counter()
    for pod, res in zip(pods, results):
        landed[only_pod(res)] += 1
        assert res["messages"] == 30
        assert peer_addr(only_peer(res))[0] == pod.ip4
    print("channels per pod:", dict(landed))

    expected = {s.name: 30 * landed[s.name] for s in servers}
    expected[pinned] += 300
    assert server_unary_counts(node, servers) == expected


def test_scale_out_does_not_help_open_channels(node):
    servers = node.add_server_pods(SERVERS)
    svc = node.add_service("echo", 50051, pods=servers)
    client_pod = node.add_pod("client-0")
    client = client_pod.grpc_client(svc.target4)
    before = client.unary(30)
    pinned, conn = only_pod(before), only_peer(before)

    new = node.add_server_pods(["server-3"])[0]
    node.set_endpoints(svc, servers + [new])
    assert f"--to-destination {new.ip4}:50051" in node.nat_rules()
    assert svc.ready_pods == SERVERS + ["server-3"]

    after = client.unary(60)
    assert only_pod(after) == pinned
    assert only_peer(after) == conn  # the same TCP connection
    assert "server-3" not in after["pods"]

    # server-3 is healthy: it answers when addressed directly...
    direct = node.grpc_client(f"{new.ip4}:50051").unary(3)
    assert only_pod(direct) == "server-3"
    # ...and a NEW channel may land on it (kube-proxy picks at random).
    fresh = client_pod.grpc_client(svc.target4).unary(10)
    assert only_pod(fresh) in SERVERS + ["server-3"]
    print("new channel landed on", only_pod(fresh))


def test_ipv6_and_dual_stack_services(node):
    servers = node.add_server_pods(SERVERS)
    svc6 = node.add_service("echo6", 50051, pods=servers, family=6)
    dual = node.add_service("echo-dual", 50051, pods=servers, family="dual")
    assert svc6.vip4 is None and svc6.vip6.startswith("fd00:10:96::")
    client_pod = node.add_pod("client-0")

    r6 = client_pod.grpc_client(svc6.target6).unary(100)
    assert only_pod(r6) in SERVERS
    assert peer_addr(only_peer(r6))[0] == client_pod.ip6

    for target, ip in ((dual.target4, client_pod.ip4), (dual.target6, client_pod.ip6)):
        r = client_pod.grpc_client(target).unary(20)
        assert only_pod(r) in SERVERS
        assert peer_addr(only_peer(r))[0] == ip

    rules6, rules4 = node.nat_rules(6), node.nat_rules(4)
    chain6 = svc6.svc_chain(6)
    assert f"-d {svc6.vip6}/128 -p tcp" in rules6 and chain6 in rules6
    assert "--probability 0.33333333349" in rules6 and "--probability 0.50000000000" in rules6
    assert f"--to-destination [{servers[0].ip6}]:50051" in rules6
    assert chain6 not in rules4 and dual.svc_chain(4) in rules4


def test_endpoint_conditions_in_rules_and_services_file(node):
    pods = [node.add_pod(n) for n in ("server-0", "server-1", "server-2")]
    svc = node.add_service("echo", 8080, target_port=50051, pods=[pods[0]],
                           terminating=[pods[1]], not_ready=[pods[2]], family="dual",
                           annotations={"h2split.io/enabled": "true"})
    rules = node.nat_rules()
    assert f"--to-destination {pods[0].ip4}:50051" in rules
    assert pods[1].ip4 not in rules and pods[2].ip4 not in rules  # only ready ones
    assert "statistic" not in rules  # one endpoint: no probability rule

    doc = json.load(open(node.services_file))
    assert doc["kind"] == "List" and doc["apiVersion"] == "v1"
    kinds = [i["kind"] for i in doc["items"]]
    assert kinds == ["Service", "EndpointSlice", "EndpointSlice"]
    s = doc["items"][0]
    assert s["spec"]["clusterIPs"] == [svc.vip4, svc.vip6]
    assert s["spec"]["ipFamilies"] == ["IPv4", "IPv6"]
    assert s["spec"]["ports"] == [{"name": "grpc", "port": 8080, "protocol": "TCP",
                                   "targetPort": 50051, "appProtocol": "kubernetes.io/h2c"}]
    assert s["metadata"]["annotations"] == {"h2split.io/enabled": "true"}
    v4 = doc["items"][1]
    assert v4["addressType"] == "IPv4"
    assert v4["metadata"]["labels"]["kubernetes.io/service-name"] == "echo"
    assert v4["ports"][0]["port"] == 50051
    conds = {e["targetRef"]["name"]: e["conditions"] for e in v4["endpoints"]}
    assert conds == {
        "server-0": {"ready": True, "serving": True, "terminating": False},
        "server-1": {"ready": False, "serving": True, "terminating": True},
        "server-2": {"ready": False, "serving": False, "terminating": False},
    }
    assert doc["items"][2]["endpoints"][0]["addresses"] == [pods[0].ip6]

    # No ready endpoint left: kube-proxy falls back to the serving terminating one.
    node.set_endpoints(svc, [], terminating=[pods[1]])
    assert f"--to-destination {pods[1].ip4}:50051" in node.nat_rules()
    # None at all: REJECT in filter, the svc chain is gone from nat.
    node.set_endpoints(svc, [])
    assert svc.svc_chain(4) not in node.nat_rules()
    assert f"-d {svc.vip4}/32" in node.iptables_save(4, "filter")
    assert json.load(open(node.services_file))["items"][1]["endpoints"] is None


def test_places_run_in_their_netns_and_cgroup(node):
    pod = node.add_pod("client-0")
    mnt = testbed.cgroup2_mount()
    for place in (node, pod):
        own = f"0::/{os.path.relpath(place.cgroup, mnt)}\n"
        assert own in place.run("cat /proc/self/cgroup").stdout
    assert pod.ip4 in pod.run(["ip", "-o", "addr", "show", "eth0"]).stdout
    assert "default via 169.254.1.1 dev eth0 onlink" in pod.run(["ip", "route"]).stdout
    # nsenter --net keeps the host's /sys: bpffs pins and cgroup2 stay visible.
    node.run(["test", "-d", node.bpffs])
    pod.run(["test", "-d", node.pods_cgroup])
    assert node.sysctl("net.ipv4.ip_forward") == "1"
    assert node.sysctl("net.ipv6.conf.all.forwarding") == "1"
    # The pytest process stays where it was.
    assert "/h2st" not in open("/proc/self/cgroup").read()
    assert os.stat("/proc/self/ns/net").st_ino != os.stat(f"/run/netns/{node.netns}").st_ino


def test_pod_kill_remove_and_hairpin(node):
    s0, s1 = node.add_server_pods(["server-0", "server-1"])
    svc = node.add_service("echo", pods=[s0], family="dual")
    # A pod reaching its own Service lands on itself (kube-proxy masquerades hairpin).
    for target in (svc.target4, svc.target6):
        assert only_pod(s0.grpc_client(target).unary(2)) == "server-0"

    s0.kill()
    assert s0.procs() == [] and s0.server.poll() is not None
    client = node.add_pod("client-0").grpc_client(svc.target4)
    assert client.unary(1, rpc_timeout=5)["errors"] == {"UNAVAILABLE": 1}

    node.set_endpoints(svc, [s0, s1])
    node.remove_pod("server-0")
    assert [e.pod.name for e in svc.endpoints] == ["server-1"]
    assert s0.ip4 not in node.nat_rules() and s0.ip6 not in node.nat_rules(6)
    assert not os.path.exists(s0.cgroup) and not os.path.exists(f"/run/netns/{s0.netns}")
    # The channel is in reconnect backoff after the failure: let it wait for ready.
    assert only_pod(client.unary(3, wait_for_ready=True)) == "server-1"

    node.remove_service(svc)
    assert "KUBE-SVC" not in node.nat_rules()
    assert node.services_doc()["items"] == []


def test_teardown_leaves_nothing(require_bed):
    prefix = "h2stc"
    bed = testbed.Node(prefix=prefix).setup()
    try:
        s = bed.add_server_pods(["server-0"])[0]
        svc = bed.add_service("echo", 50051, pods=[s], family="dual")
        assert bed.add_pod("client-0").grpc_client(svc.target4).unary(3)["ok"] == 3
        chains = [svc.svc_chain(4), svc.sep_chain(svc.endpoints[0], 4)]
        pids = bed.procs() + [p for pod in bed.pods.values() for p in pod.procs()]
        assert set(testbed.leftovers(prefix)) == {"netns", "cgroup", "bpffs", "workdir"}
    finally:
        bed.teardown()
    assert testbed.leftovers(prefix) == {}
    assert not any(testbed.util.pid_alive(p) for p in pids)
    host_rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert not any(c in host_rules for c in chains)


KILLED_BED = r"""
import json, os, subprocess, sys, time
import testbed
bed = testbed.Node(prefix=sys.argv[1]).setup()
s = bed.add_server_pods(["server-0"])[0]
svc = bed.add_service("echo", 50051, pods=[s])
c = bed.add_pod("client-0").grpc_client(svc.target4)
assert c.unary(3)["ok"] == 3
# A process in a bed netns but in no bed cgroup: cleanup must find it too.
stray = subprocess.Popen(["nsenter", "--net=/run/netns/%s-client-0" % sys.argv[1],
                          "sleep", "600"])
os.makedirs(os.path.join(bed.bpffs, "sub"))
# (The client exits by itself when its stdin closes; the server and stray stay.)
print("built " + json.dumps([s.server.pid, stray.pid]), flush=True)
time.sleep(600)
"""


def test_sigkilled_bed_is_cleaned_by_next_setup(require_bed, tmp_path):
    prefix = "h2stk"
    testbed.cleanup(prefix)
    builder = testbed.Proc([testbed.python(), "-c", KILLED_BED, prefix], "killed-bed",
                           str(tmp_path / "builder.log"), watch=True,
                           env=testbed.util.child_env())
    try:
        pids = json.loads(builder.wait_line(r"^built ", 30).split(" ", 1)[1])
        builder.send_signal(signal.SIGKILL)
        builder.wait(10)
    finally:
        builder.stop(1)
    assert all(testbed.util.pid_alive(p) for p in pids), "orphans should outlive the builder"
    assert set(testbed.leftovers(prefix)) == {"netns", "cgroup", "bpffs", "workdir"}

    with testbed.Node(prefix=prefix) as bed:
        assert not any(testbed.util.pid_alive(p) for p in pids)
        assert not os.path.exists(os.path.join(bed.bpffs, "sub"))
        s = bed.add_server_pods(["server-0"])[0]
        svc = bed.add_service("echo", 50051, pods=[s])
        assert only_pod(bed.add_pod("client-0").grpc_client(svc.target4).unary(3)) == \
            "server-0"
    assert testbed.leftovers(prefix) == {}


def test_cleanup_module_runs_standalone(require_bed):
    r = subprocess.run([testbed.python(), "-m", "testbed.cleanup", "h2stz"],
                       capture_output=True, text=True, env=testbed.util.child_env(),
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "clean" in r.stdout


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
