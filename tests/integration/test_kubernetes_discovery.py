# SPDX-License-Identifier: Apache-2.0
"""h2splitd with --discovery kubernetes on the simulated node, against the fake
API server (testbed/kube_api.py) running inside the node's network namespace:
Services appear in and leave the BPF services map as the API changes, through a
dropped watch, an expired resourceVersion (410), a silent watch and a token
rotation; an API server whose every watch expires is relisted with growing
delays, not in a loop; RPCs to a Service found through the API are split
across its pods; a pod annotated h2split.io/enabled: "false" has its cgroup
excluded, and stays excluded when the operator takes back an exclusion of
their own; garbage and malformed objects from the API leave the last good
state in force; this node's zone label, read from its Node object, decides
where a PreferSameZone Service's RPCs go, and follows the label."""

import copy
import json
import os
import re
import signal
import subprocess
import uuid

import pytest

import testbed
from testbed.kube_api import KubeAPIProcess, endpoint_slice, namespace, node as node_obj, pod, \
    service

NODE_NAME = "test-node"
# What h2splitd watches here (--node-name: this node's Pods and Node too).
WATCHED = ("services", "endpointslices", "namespaces", "pods", "nodes")
WATCH_IDLE_S = 2  # H2SPLIT_KUBE_WATCH_IDLE: a silent watch is restarted after this


class KubeBed:
    """The bed, a fake API server in its node netns, and h2splitd watching it."""

    def __init__(self, node, build_dir):
        self.node, self.build_dir = node, build_dir
        self.api = KubeAPIProcess(node.popen, workdir=os.path.join(node.workdir, "kube-api"),
                                  bookmark_interval=0.5)
        self.api.apply("namespaces", namespace("default"))
        argv = [os.path.join(build_dir, "h2splitd"), "--discovery", "kubernetes",
                "--kube-api", self.api.url, "--kube-token-file", self.api.token_file,
                "--kube-ca-file", self.api.ca_file, "--node-name", NODE_NAME,
                "--cgroup", node.pods_cgroup, "--bpffs", node.bpffs,
                "--admin", "127.0.0.1:9901", "--listen", "169.254.20.11:15001",
                "--log-level", "debug"]
        self.daemon = node.popen(argv, name="h2splitd", watch=True, stderr=subprocess.STDOUT,
                                 env={"H2SPLIT_KUBE_WATCH_IDLE": str(WATCH_IDLE_S)})
        self.daemon.wait_line(r"msg=redirecting", 30)

    def ctl(self, *args):
        return self.node.ctl_json(self.build_dir, *args)

    def vips(self):
        """{"VIP:port"} in the BPF services map."""
        return {f"{e['vip']}:{e['port']}" for e in self.ctl("services")}

    def wait_vips(self, want, timeout=15):
        want = set(want)
        testbed.wait_for(lambda: self.vips() == want, timeout,
                         f"services map to hold exactly {sorted(want)}")

    def add(self, name, vip, port=50051, addresses=("10.244.0.200",)):
        self.api.apply("services", service(name, "default", vip, port))
        self.api.apply("endpointslices", endpoint_slice(name, "default", list(addresses),
                                                        port=port))

    def remove(self, name):
        self.api.delete("services", "default", name)
        self.api.delete("endpointslices", "default", f"{name}-ipv4")

    def mark(self):
        """A position in the daemon's output, for wait_logged()."""
        return len(self.daemon.lines)

    def wait_logged(self, mark, pattern, timeout=15):
        """Wait for a line after ``mark`` matching ``pattern`` (what the daemon says
        it did); returns the mark just past that line."""
        rx = re.compile(pattern)

        def found():
            lines = self.daemon.lines
            return next((i + 1 for i in range(mark, len(lines)) if rx.search(lines[i])), None)
        return testbed.wait_for(found, timeout, f"h2splitd to log {pattern!r}")

    def excluded_by(self, cgroup):
        """The origins excluding cgroup directory ``cgroup``, None when not excluded."""
        for e in self.ctl("status")["excluded_cgroups"]:
            if e.get("path") == cgroup:
                return e["origins"]
        return None


@pytest.fixture(scope="module")
def kbed(module_node, build_dir):
    if not os.access(os.path.join(build_dir, "h2splitd"), os.X_OK):
        pytest.fail(f"{build_dir}/h2splitd not built: run make")
    b = KubeBed(module_node, build_dir)
    try:
        yield b
    finally:
        b.daemon.stop()
        b.api.stop()


@pytest.fixture
def clean(kbed):
    """Each test starts from an API server without Services, and from fresh
    reflectors: SIGHUP relists everything with the backoff reset, so no test
    waits out the delays an earlier test's failures built up."""
    mark = kbed.mark()
    kbed.watches_before = {r: kbed.api.count_requests(status=200, resource=r, watch=True)
                           for r in WATCHED}
    kbed.daemon.send_signal(signal.SIGHUP)
    mark = kbed.wait_logged(mark, r"kube_relist reason=reload")
    for res in ("services", "endpointslices", "namespaces", "pods"):
        kbed.wait_logged(mark, rf"kube_list_done resource={res} ")
    kbed.api.set_objects("services", [])
    kbed.api.set_objects("endpointslices", [])
    kbed.wait_vips(set())
    return kbed


def test_services_follow_the_api(clean):
    k = clean
    k.add("alpha", "10.96.0.50")
    k.wait_vips({"10.96.0.50:50051"})
    k.add("beta", "10.96.0.51", port=9000)
    k.wait_vips({"10.96.0.50:50051", "10.96.0.51:9000"})
    # A Service that does not opt in never reaches the map.
    k.api.apply("services", service("plain", "default", "10.96.0.52", 80, app_protocol=None))
    k.remove("alpha")
    k.wait_vips({"10.96.0.51:9000"})


def test_survives_a_dropped_watch(clean):
    k = clean
    k.add("alpha", "10.96.0.50")
    k.wait_vips({"10.96.0.50:50051"})
    k.api.drop_watches()
    k.add("beta", "10.96.0.51")
    k.wait_vips({"10.96.0.50:50051", "10.96.0.51:50051"})


def test_relists_after_an_expired_resource_version(clean):
    k = clean
    k.add("alpha", "10.96.0.50")
    k.add("beta", "10.96.0.51")
    k.wait_vips({"10.96.0.50:50051", "10.96.0.51:50051"})
    # Changes no watch delivers, then history is compacted: only the relist
    # that follows the 410 can tell that alpha went and gamma came.
    k.api.stall_watches()
    k.remove("alpha")
    k.add("gamma", "10.96.0.52")
    k.api.expire_resource_versions("event")
    k.wait_vips({"10.96.0.51:50051", "10.96.0.52:50051"})
    k.api.stall_watches()
    k.remove("beta")
    k.api.expire_resource_versions("drop")
    # Two backoffs in a row (the cut watch, then the 410 of its rewatch): up
    # to 3.2 + 6.4 s before the relist.
    k.wait_vips({"10.96.0.52:50051"}, timeout=30)


def test_restarts_a_silent_watch(clean):
    k = clean
    k.add("alpha", "10.96.0.50")
    k.wait_vips({"10.96.0.50:50051"})
    k.api.stall_watches()
    k.add("beta", "10.96.0.51")
    k.wait_vips({"10.96.0.50:50051", "10.96.0.51:50051"}, timeout=WATCH_IDLE_S + 15)


def test_follows_a_token_rotation(clean):
    k = clean
    k.add("alpha", "10.96.0.50")
    k.wait_vips({"10.96.0.50:50051"})
    # A request reads the token before its TLS handshake: one still on its way
    # when the token changes is a 401 for a reason of the test's making. A
    # state goes out 20 ms after a lone change, which can be before the
    # watches that follow the fixture's relist are all up: wait for them.
    testbed.wait_for(lambda: all(
        k.api.count_requests(status=200, resource=r, watch=True) > k.watches_before[r]
        for r in WATCHED), 15, "a watch of every resource after the relist")
    before = k.api.count_requests(status=401)
    k.api.rotate_token()
    k.api.drop_watches()
    k.add("beta", "10.96.0.51")
    k.wait_vips({"10.96.0.50:50051", "10.96.0.51:50051"})
    assert k.api.count_requests(status=401) == before, "the old token was used after rotation"


def test_rpcs_split_across_pods_of_a_discovered_service(clean):
    k, node = clean, clean.node
    servers = node.add_server_pods(["kserver-0", "kserver-1"])
    svc = node.add_service("kecho", pods=servers)  # kube-proxy rules in the bed
    try:
        # The same Service and EndpointSlice, as the API server shows them.
        for item in node.services_doc()["items"]:
            meta = item["metadata"]
            if meta["name"].startswith("kecho"):
                k.api.apply(item["kind"], item)
        k.wait_vips({f"{svc.vip4}:{svc.port}"})
        client = node.add_pod("kclient-0").grpc_client(svc.target4)
        r = client.unary(60)
        assert r["ok"] == 60, r
        assert set(r["pods"]) == {"kserver-0", "kserver-1"}, r  # one channel, both pods
        client.close()
    finally:
        node.remove_service(svc)


def tier(node, pod_name):
    """The locality tier h2splitd's workers all apply to ``pod_name`` (/endpoints)."""
    r = node.run(["curl", "-sf", "--max-time", "5", "http://127.0.0.1:9901/endpoints"],
                 check=False)
    for s in json.loads(r.stdout or '{"services": []}')["services"]:
        for e in s["endpoints"]:
            if e["pod"] == pod_name:
                return e["tier"]
    return None


def test_node_zone_label_decides_locality(clean):
    k, node = clean, clean.node
    near = node.add_server_pods(["kz-near"], node="other-node", zone="z1")
    far = node.add_server_pods(["kz-far"], node="third-node", zone="z2")
    svc = node.add_service("kzone", pods=near + far, traffic_distribution="PreferSameZone")
    try:
        for item in node.services_doc()["items"]:
            if item["metadata"]["name"].startswith("kzone"):
                k.api.apply(item["kind"], item)
        k.wait_vips({f"{svc.vip4}:{svc.port}"})
        mark = k.mark()
        k.api.apply("nodes", node_obj(NODE_NAME, zone="z1"))
        k.wait_logged(mark, rf"locality_zone node={NODE_NAME} zone=z1 from=Node label")
        testbed.wait_for(lambda: tier(node, "kz-near") == "zone", 15, "kz-near in the zone tier")
        client = node.add_pod("kzclient-0").grpc_client(svc.target4)
        r = client.unary(100)
        assert r["pods"] == {"kz-near": 100}, r
        # The label moves (a re-labelled node): the watch brings it.
        mark = k.mark()
        k.api.apply("nodes", node_obj(NODE_NAME, zone="z2"))
        k.wait_logged(mark, r"locality_zone node=\S+ zone=z2 ")
        testbed.wait_for(lambda: tier(node, "kz-far") == "zone", 15, "kz-far in the zone tier")
        r = client.unary(100)
        assert r["pods"] == {"kz-far": 100}, r
        client.close()
    finally:
        k.api.set_objects("nodes", [])
        node.remove_service(svc)


def test_opted_out_pod_cgroup_is_excluded(clean):
    k, node = clean, clean.node
    uid = str(uuid.uuid4())
    # A pod cgroup laid out as the kubelet's cgroupfs driver does, in the bed's tree.
    cg = os.path.join(node.pods_cgroup, "kubepods", "besteffort", "pod" + uid)

    def excluded():
        return [e for e in k.ctl("status")["excluded_cgroups"]
                if (e.get("path") or "").endswith("pod" + uid)]

    os.makedirs(cg)
    try:
        k.api.apply("pods", pod("opted-out", "default", uid=uid, node_name=NODE_NAME,
                                annotations={"h2split.io/enabled": "false"}))
        testbed.wait_for(excluded, 15, f"cgroup pod{uid} in the exclusion map")
        # Annotation gone: redirected again.
        k.api.apply("pods", pod("opted-out", "default", uid=uid, node_name=NODE_NAME))
        testbed.wait_for(lambda: not excluded(), 15, f"cgroup pod{uid} to leave the map")
        # A namespace label opts out every pod of the namespace on this node.
        k.api.apply("namespaces", namespace("default", {"h2split.io/enabled": "false"}))
        testbed.wait_for(excluded, 15, f"cgroup pod{uid} excluded by its namespace")
        # Pods of other nodes are not even listed.
        assert k.api.count_requests(resource="pods", watch=False) >= 1
    finally:
        k.api.apply("namespaces", namespace("default"))
        k.api.set_objects("pods", [])
        testbed.wait_for(lambda: not excluded(), 15, "exclusions to clear")
        os.rmdir(cg)
        os.rmdir(os.path.dirname(cg))
        os.rmdir(os.path.dirname(os.path.dirname(cg)))


def test_operator_include_leaves_a_pod_opt_out(clean):
    """A pod excluded twice, by `h2splitctl exclude` and by its own annotation
    h2split.io/enabled: "false". `h2splitctl include` takes back only the
    operator's exclusion and says the opt-out still holds: the pod's channel
    still goes where it dialled (kube-proxy pins it to one pod, no connect is
    redirected). Once the annotation goes too, its next channel is redirected
    and its RPCs are split across both pods."""
    k, node = clean, clean.node
    uid = str(uuid.uuid4())
    servers = node.add_server_pods(["xserver-0", "xserver-1"])
    svc = node.add_service("xecho", pods=servers)
    # The cgroup is named as the kubelet's cgroupfs driver names a pod's: pod<uid>.
    client_pod = node.add_pod("pod" + uid)

    def rpcs(n):
        before = k.ctl("counters")
        client = client_pod.grpc_client(svc.target4)
        try:
            r = client.unary(n)
        finally:
            client.close()
        after = k.ctl("counters")
        assert r["ok"] == n, r
        return set(r["pods"]), {c: after[c] - before[c] for c in after}

    try:
        for item in node.services_doc()["items"]:
            if item["metadata"]["name"].startswith("xecho"):
                k.api.apply(item["kind"], item)
        k.wait_vips({f"{svc.vip4}:{svc.port}"})
        k.ctl("exclude", client_pod.cgroup)
        mark = k.mark()
        k.api.apply("pods", pod("xclient", "default", uid=uid, node_name=NODE_NAME,
                                annotations={"h2split.io/enabled": "false"}))
        k.wait_logged(mark, r"kube_opt_outs_synced excluded_pods=1 ")

        r = k.ctl("include", client_pod.cgroup)
        pods, delta = rpcs(20)
        assert delta["redirected"] == 0, \
            f"the opted-out pod was redirected after h2splitctl include: {delta}"
        assert delta["bypass_excluded"] >= 1, delta
        assert len(pods) == 1, f"one direct connection, one pod: {pods}"
        assert r["was_excluded"] and r["excluded_by"] == ["k8s"], r
        assert k.excluded_by(client_pod.cgroup) == ["k8s"]

        # The annotation goes: nobody excludes the pod any more.
        k.api.apply("pods", pod("xclient", "default", uid=uid, node_name=NODE_NAME))
        testbed.wait_for(lambda: k.excluded_by(client_pod.cgroup) is None, 15,
                         "the pod's cgroup to leave the exclusion map")
        pods, delta = rpcs(40)
        assert delta["redirected"] >= 1 and delta["bypass_excluded"] == 0, delta
        assert pods == {"xserver-0", "xserver-1"}, pods
    finally:
        k.ctl("include", client_pod.cgroup)
        k.api.set_objects("pods", [])
        testbed.wait_for(lambda: k.excluded_by(client_pod.cgroup) is None, 15,
                         "exclusions to clear")
        node.remove_service(svc)
        node.remove_pod(client_pod)


def discovery_metric(node, name):
    r = node.run(["curl", "-s", "--max-time", "5", "http://127.0.0.1:9901/metrics"])
    return int(re.search(rf"^{name} (\d+)$", r.stdout, re.M).group(1))


def discovery_errors(node):
    return discovery_metric(node, "h2split_discovery_errors_total")


def test_relists_back_off_when_every_watch_expires(clean):
    """An API server whose watch cache window is shorter than a list takes:
    every watch, even from the resourceVersion a list just returned, ends at
    once with 410 Gone. The daemon relists each time, but backs off as
    client-go's reflector does: the delays it reports (kube_watch_expired
    ... retry_ms=) double from 0.8-1.6 s, and the server's own clock shows
    each list at least that long after the one before. Waits are on the
    server's count of lists; time enters only as the gaps the server
    measured, checked against what the daemon said it would wait (a slow
    machine only makes them longer)."""
    k, node = clean, clean.node
    k.add("alpha", "10.96.0.50")
    k.wait_vips({"10.96.0.50:50051"})
    mark = k.mark()
    lists0 = k.api.count_requests(resource="services", watch=False)
    relists0 = discovery_metric(node, "h2split_discovery_relists_total")
    k.api.always_expire("services")
    try:
        testbed.wait_for(
            lambda: k.api.count_requests(resource="services", watch=False) >= lists0 + 4, 90,
            "four services lists after every watch began to expire")
        times = k.api.request_times(resource="services", watch=False)[lists0:lists0 + 4]
        gaps_ms = [round((b - a) * 1000) for a, b in zip(times, times[1:])]
        delays = []
        for line in k.daemon.lines[mark:]:
            if "kube_watch_expired resource=services " in line:
                m = re.search(r"retry_ms=(\d+)", line)
                delays.append(int(m.group(1)) if m else 0)
        delays = delays[:4]  # the relists that led to those four lists
        seen = f"reported delays {delays} ms, lists {gaps_ms} ms apart"
        assert len(delays) == 4, seen
        assert delays[0] >= 800 and delays == sorted(delays), \
            f"relisted without backing off: {seen}"
        assert delays[3] >= 4 * delays[0], f"the delays did not double: {seen}"
        for gap, delay in zip(gaps_ms, delays[1:]):
            assert gap >= delay - 20, f"listed sooner than the daemon said: {seen}"
        relists = discovery_metric(node, "h2split_discovery_relists_total") - relists0
        lists = k.api.count_requests(resource="services", watch=False) - lists0
        assert lists <= relists, f"{lists} lists for {relists} relists"
        assert k.vips() == {"10.96.0.50:50051"}  # the last list's state stays in force
    finally:
        k.api.always_expire("services", on=False)


def test_malformed_api_input_keeps_the_last_good_state(clean):
    """The API server sends garbage and malformed objects, in a watch and in a
    list. Each time the daemon logs it and counts it
    (h2split_discovery_errors_total), and keeps routing on the last good
    state: the BPF services map and the pods RPCs go to do not change."""
    k, node = clean, clean.node
    servers = node.add_server_pods(["mserver-0", "mserver-1"])
    svc = node.add_service("mecho", pods=servers)
    client = None
    try:
        items = {i["kind"]: i for i in node.services_doc()["items"]
                 if i["metadata"]["name"].startswith("mecho")}
        stored = {kind: k.api.apply(kind, item) for kind, item in items.items()}
        want = {f"{svc.vip4}:{svc.port}"}
        k.wait_vips(want)
        client = node.add_pod("mclient-0").grpc_client(svc.target4)

        def unchanged(what):
            assert k.vips() == want, f"services map changed after {what}"
            r = client.unary(40, rpc_timeout=10)
            assert r["ok"] == 40 and set(r["pods"]) == {"mserver-0", "mserver-1"}, \
                f"RPCs after {what}: {r}"
            assert k.daemon.poll() is None, f"h2splitd exited after {what}"

        unchanged("the first sync")
        errors = discovery_errors(node)
        # A Service whose ports are not a list: well-formed JSON, invalid object.
        bad = copy.deepcopy(stored["Service"])
        bad["spec"]["ports"] = "50051"
        bad_list = {"kind": "ServiceList", "apiVersion": "v1",
                    "metadata": {"resourceVersion": bad["metadata"]["resourceVersion"]},
                    "items": [{x: v for x, v in bad.items() if x not in ("kind", "apiVersion")}]}
        steps = [
            ("garbage in a watch", "watch", '{"type":"MODIFIED","object":{"metadata":',
             r"kube_watch_bad_event resource=services"),
            ("a malformed object in a watch", "watch",
             json.dumps({"type": "MODIFIED", "object": bad}),
             r"kube_object_invalid resource=services object=default/mecho .*"
             r"action=kept_last_good"),
            ("garbage as a list", "list", '{"kind":"ServiceList","items":[{"metadata":',
             r"kube_list_failed resource=services"),
            ("a malformed object in a list", "list", json.dumps(bad_list),
             r"kube_object_invalid resource=services object=default/mecho .*"
             r"action=kept_last_good"),
        ]
        watches = k.api.count_requests(resource="services", watch=True) - 1
        for what, where, text, logged in steps:
            if where == "watch":
                # To the watch the daemon has open now (after garbage it rewatches;
                # the old stream lingers at the fixture until it notices).
                testbed.wait_for(
                    lambda: k.api.count_requests(resource="services", watch=True) > watches,
                    15, "the daemon to open a new services watch")
                watches = k.api.count_requests(resource="services", watch=True)
                k.api.send_raw("watch", "services", text)
            else:
                k.api.send_raw("list", "services", text)
                k.api.expire_resource_versions("event")  # the watch ends: relist
            # Each step's failure backs off more: the last relist may wait 12.8 s.
            k.daemon.wait_line(logged, 40)
            testbed.wait_for(lambda: discovery_errors(node) > errors, 10,
                             f"h2split_discovery_errors_total to count {what}")
            errors = discovery_errors(node)
            unchanged(what)
    finally:
        if client:
            client.close()
        node.remove_service(svc)
