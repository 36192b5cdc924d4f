# SPDX-License-Identifier: Apache-2.0
"""h2splitd with --discovery kubernetes on the simulated node, against the fake
API server (testbed/kube_api.py) running inside the node's network namespace:
Services appear in and leave the BPF services map as the API changes, through a
dropped watch, an expired resourceVersion (410), a silent watch and a token
rotation; RPCs to a Service found through the API are split across its pods;
a pod annotated h2split.io/enabled: "false" has its cgroup excluded."""

import json
import os
import subprocess
import uuid

import pytest

import testbed
from testbed.kube_api import KubeAPIProcess, endpoint_slice, namespace, pod, service

NODE_NAME = "test-node"
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
        r = subprocess.run([os.path.join(self.build_dir, "h2splitctl"), "--bpffs",
                            self.node.bpffs, "-o", "json", *args],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, f"h2splitctl {args}: {r.stderr}"
        return json.loads(r.stdout)

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
    """Each test starts from an API server without Services."""
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
    k.wait_vips({"10.96.0.52:50051"})


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
