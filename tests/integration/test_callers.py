# SPDX-License-Identifier: Apache-2.0
"""Who calls whom (issue #23): per-caller and per-method series.

Client pods are named pod<uid>, as the kubelet's cgroupfs driver names a
pod's cgroup, and the services file lists a Pod object for each one the
daemon should know: its namespace and owner give the caller's workload. A
pod without a Pod object is the caller "unknown", and its RPCs are fine.
"""

import hashlib
import json
import os
import re
import subprocess
import uuid

import testbed
from testbed import kube

from test_observability import ctl, get, metric, start

ECHO = "h2split.test.Echo"


def pod_obj(name, namespace, uid, owner_kind=None, owner_name=None, template_hash=None):
    meta = {"name": name, "namespace": namespace, "uid": uid}
    if owner_kind:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner_kind,
                                    "name": owner_name, "uid": str(uuid.uuid4()),
                                    "controller": True}]
    if template_hash:
        meta["labels"] = {"pod-template-hash": template_hash}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"nodeName": "h2st-node"},
            "status": {"phase": "Running", "qosClass": "BestEffort"}}


def write_with_pods(node, pods):
    """The bed's services file plus |pods|, written as the bed writes it; waits
    until the daemon reports it applied."""
    doc = kube.kubectl_list(list(node.services.values()), node.netns)
    doc["items"].extend(pods)
    data = (json.dumps(doc, indent=4, sort_keys=True) + "\n").encode()
    tmp = node.services_file + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, node.services_file)
    node.file_version = "sha256:" + hashlib.sha256(data).hexdigest()
    node.wait_applied()


def series(text, name, **labels):
    """The label sets of |name|'s samples that include |labels|."""
    out = []
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        body = line[len(name) + 1:line.rindex("}")]
        have = dict(kv.split("=", 1) for kv in body.replace('"', "").split(","))
        if all(have.get(k) == v for k, v in labels.items()):
            out.append(have)
    return out


def test_caller_and_method_series_add_up_per_workload(node, build_dir):
    servers = node.add_server_pods(["server-0", "server-1"])
    svc = node.add_service("echo", 50051, pods=servers)
    uid_a, uid_b, uid_u = (str(uuid.uuid4()) for _ in range(3))
    pod_a, pod_b, pod_u = (node.add_pod("pod" + u) for u in (uid_a, uid_b, uid_u))
    d = start(node, build_dir)
    d.wait_line(r"msg=redirecting", 15)
    # pod_u has no Pod object: the daemon cannot know who it is.
    write_with_pods(node, [
        pod_obj("client-a-5d8f9c-x2k4q", "team-a", uid_a, "ReplicaSet", "client-a-5d8f9c",
                "5d8f9c"),
        pod_obj("client-b-0", "team-b", uid_b, "StatefulSet", "client-b"),
    ])

    a, b, u = (p.grpc_client(svc.target4) for p in (pod_a, pod_b, pod_u))
    assert a.unary(30)["ok"] == 30
    assert a.unary(7, status=5)["errors"] == {"NOT_FOUND": 7}
    assert a.server_stream(3)["ok"] == 1
    assert b.unary(11, status=9)["errors"] == {"FAILED_PRECONDITION": 11}
    for _ in range(4):
        assert b.client_stream(2)["ok"] == 1
    assert u.unary(13)["ok"] == 13  # unknown caller: RPCs unaffected
    for c in (b, u):
        c.close()

    service = f"default/echo:{svc.port}"
    want = {
        ("team-a", "deployment/client-a", "0"): 31,
        ("team-a", "deployment/client-a", "5"): 7,
        ("team-b", "statefulset/client-b", "9"): 11,
        ("team-b", "statefulset/client-b", "0"): 4,
        ("unknown", "unknown", "0"): 13,
    }

    def callers():
        got = {}
        for s in series(text := get(node, "/metrics")[1], "h2split_caller_requests_total",
                        service=service):
            got[(s["caller_namespace"], s["caller_workload"], s["grpc_status"])] = \
                metric(text, "h2split_caller_requests_total", **s)
        return got

    # A stream's metrics are written as it ends, just after the client sees it end.
    testbed.wait_for(lambda: callers() == want, 10, f"caller series {want}")
    _, text = get(node, "/metrics")
    assert metric(text, "h2split_caller_request_duration_seconds_count", service=service,
                  caller_namespace="team-a", caller_workload="deployment/client-a") == 38
    assert metric(text, "h2split_caller_request_duration_seconds_count", service=service,
                  caller_namespace="unknown", caller_workload="unknown") == 13

    methods = {(s["method"], s["grpc_status"]):
               metric(text, "h2split_method_requests_total", **s)
               for s in series(text, "h2split_method_requests_total", service=service)}
    assert methods == {
        (f"{ECHO}/Unary", "0"): 43, (f"{ECHO}/Unary", "5"): 7, (f"{ECHO}/Unary", "9"): 11,
        (f"{ECHO}/ServerStream", "0"): 1, (f"{ECHO}/ClientStream", "0"): 4,
    }, methods
    assert metric(text, "h2split_method_request_duration_seconds_count", service=service,
                  method=f"{ECHO}/Unary") == 61
    assert metric(text, "h2split_series_overflow_total") == 0

    # h2splitctl stat: the same totals, per caller, by workload name.
    rows = json.loads(ctl(node, build_dir, "-o", "json", "stat", "--from", "client-a").stdout)
    assert [(r["caller"], r["service"], r["requests"], r["success"]) for r in rows] == \
        [("team-a/deployment/client-a", service, 38, 31)], rows
    rows = json.loads(ctl(node, build_dir, "-o", "json", "stat", "--to", "echo").stdout)
    assert sorted((r["caller"], r["requests"]) for r in rows) == [
        ("team-a/deployment/client-a", 38), ("team-b/statefulset/client-b", 15),
        ("unknown/unknown", 13)], rows
    # top --by caller / method: rates of what runs now, and only that.
    job = a.loop(5)
    a.wait_progress(20)
    top = json.loads(ctl(node, build_dir, "-o", "json", "top", "--by", "caller",
                         "--interval", "0.5", "--iterations", "1").stdout)
    busy = {r["caller"]: r["rps"] for r in top if r["rps"] > 0}
    assert list(busy) == ["team-a/deployment/client-a"], top
    top = json.loads(ctl(node, build_dir, "-o", "json", "top", "--by", "method",
                         "--interval", "0.5", "--iterations", "1").stdout)
    assert [r["method"] for r in top if r["rps"] > 0] == [f"{ECHO}/Unary"], top
    assert a.stop_loop(job)["ok"] > 0
    a.close()


METHODS_SCRIPT = r"""
import grpc, sys
ch = grpc.insecure_channel(sys.argv[1], options=[("grpc.enable_http_proxy", 0)])
codes = {}
for i in range(int(sys.argv[2])):
    try:
        ch.unary_unary(f"/bench.Many/M{i:04d}")(b"", timeout=10)
        c = "OK"
    except grpc.RpcError as e:
        c = e.code().name
    codes[c] = codes.get(c, 0) + 1
print(codes)
"""


def test_a_thousand_methods_stay_bounded_and_overflow_is_counted(node, build_dir):
    servers = node.add_server_pods(["server-0"])
    svc = node.add_service("echo", 50051, pods=servers)
    d = start(node, build_dir, "--max-methods-per-service", "10")
    d.wait_line(r"msg=redirecting", 15)
    client = node.add_pod("client-0")
    r = client.run([testbed.python(), "-c", METHODS_SCRIPT, svc.target4, "1000"],
                   check=False, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "{'UNIMPLEMENTED': 1000}", (r.stdout,
                                                                                 r.stderr)
    service = f"default/echo:{svc.port}"

    def total():
        return metric(get(node, "/metrics")[1], "h2split_method_requests_total",
                      service=service)

    testbed.wait_for(lambda: total() == 1000, 10, "1000 RPCs in the method series")
    _, text = get(node, "/metrics")
    names = {s["method"] for s in series(text, "h2split_method_requests_total",
                                         service=service)}
    assert "other" in names and len(names) == 11, sorted(names)
    assert metric(text, "h2split_method_requests_total", service=service, method="other",
                  grpc_status="12") == 990
    assert metric(text, "h2split_series_overflow_total", table="methods") == 990
    assert metric(text, "h2split_series_overflow_total", table="callers") == 0
    # Every RPC still reached the server (UNIMPLEMENTED is its answer, not ours).
    assert metric(text, "h2split_endpoint_requests_total", service=service) == 1000


def test_series_off_with_zero_limits(node, build_dir):
    servers = node.add_server_pods(["server-0"])
    svc = node.add_service("echo", 50051, pods=servers)
    d = start(node, build_dir, "--max-methods-per-service", "0",
              "--max-callers-per-service", "0")
    d.wait_line(r"msg=redirecting", 15)
    c = node.add_pod("client-0").grpc_client(svc.target4)
    assert c.unary(5)["ok"] == 5
    c.close()
    service = f"default/echo:{svc.port}"
    testbed.wait_for(lambda: metric(get(node, "/metrics")[1],
                                    "h2split_service_request_duration_seconds_count",
                                    service=service) == 5, 10, "5 streams counted")
    text = get(node, "/metrics")[1]
    assert "h2split_caller_requests_total" not in text
    assert "h2split_method_requests_total" not in text


def test_tap_shows_the_filtered_rpcs_and_only_those(node, build_dir):
    servers = node.add_server_pods(["server-0"])
    svc = node.add_service("echo", 50051, pods=servers)
    uid_a, uid_b = str(uuid.uuid4()), str(uuid.uuid4())
    pod_a, pod_b = node.add_pod("pod" + uid_a), node.add_pod("pod" + uid_b)
    d = start(node, build_dir)
    d.wait_line(r"msg=redirecting", 15)
    write_with_pods(node, [
        pod_obj("client-a-0", "team-a", uid_a, "StatefulSet", "client-a"),
        pod_obj("client-b-0", "team-b", uid_b, "StatefulSet", "client-b"),
    ])
    a, b = pod_a.grpc_client(svc.target4), pod_b.grpc_client(svc.target4)
    tap = node.popen([os.path.join(build_dir, "h2splitctl"), "-o", "json", "tap",
                      "--caller", "client-b", "--method", "ClientStream", "--max", "4"],
                     name="tap", watch=True, stderr=subprocess.STDOUT)
    tap.wait_line(r"^h2splitctl tap: attached", 15)
    # Around the 4 it must show: other methods of the same caller, the same
    # method of another caller.
    assert a.client_stream(2)["ok"] == 1
    assert b.unary(5)["ok"] == 5
    for _ in range(4):
        assert a.unary(3)["ok"] == 3
        assert b.client_stream(2)["ok"] == 1
        assert a.client_stream(2)["ok"] == 1
    assert tap.wait(15) == 0, tap.log_tail()
    events = [json.loads(line) for line in tap.lines if line.startswith("{")]
    assert len(events) == 4, tap.lines
    for e in events:
        assert (e["caller"], e["method"], e["service"], e["grpc_status"]) == \
            ("team-b/statefulset/client-b", f"{ECHO}/ClientStream", f"default/echo:{svc.port}",
             0), e
        assert e["endpoint"] == f"{servers[0].ip4}:50051" and e["http_status"] == 200, e
        assert e["bytes_in"] > 0 and e["bytes_out"] > 0 and e["duration_us"] > 0, e
    a.close()
    b.close()


def exported_families(text):
    """Metric names a scrape offers: every family, and a histogram's series."""
    names = set()
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names.add(m.group(1))
        if m.group(2) == "histogram":
            names.update(m.group(1) + s for s in ("_bucket", "_sum", "_count"))
    return names


def test_dashboard_queries_name_metrics_the_daemon_exports(node, build_dir):
    """deploy/monitoring renders (with every kubectl test_deploy knows), its
    PodMonitor selects the DaemonSet's pods, and every query of the Grafana
    dashboard names only metrics a running h2splitd exports."""
    import test_deploy
    servers = node.add_server_pods(["server-0"])
    svc = node.add_service("echo", 50051, pods=servers)
    d = start(node, build_dir)
    d.wait_line(r"msg=redirecting", 15)
    c = node.add_pod("client-0").grpc_client(svc.target4)
    assert c.unary(3)["ok"] == 3
    c.close()
    exported = exported_families(get(node, "/metrics")[1])

    for kubectl in test_deploy.KUBECTLS:
        objs = test_deploy.render(kubectl, os.path.join(test_deploy.DEPLOY, "monitoring"))
        pm = test_deploy.by_kind(objs, "PodMonitor", "h2split")
        ds = test_deploy.by_kind(test_deploy.render(kubectl, test_deploy.DEPLOY), "DaemonSet",
                                 "h2split")
        labels = ds["spec"]["template"]["metadata"]["labels"]
        assert pm["metadata"]["namespace"] == ds["metadata"]["namespace"]
        assert all(labels.get(k) == v for k, v in pm["spec"]["selector"]["matchLabels"].items())
        assert pm["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"
        cm = test_deploy.by_kind(objs, "ConfigMap", "h2split-dashboard")
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        dash = json.loads(cm["data"]["h2split-dashboard.json"])
        exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
        exprs += [v["query"]["query"] for v in dash["templating"]["list"]
                  if isinstance(v.get("query"), dict)]
        assert len(exprs) > 20
        used = {n for e in exprs for n in re.findall(r"\bh2split_[a-z0-9_]+", e)}
        assert used - exported == set(), f"dashboard names metrics nobody exports: " \
                                         f"{sorted(used - exported)}"
        # The panels: per service, caller, method, endpoint, and BPF.
        for want in ("h2split_caller_requests_total", "h2split_method_requests_total",
                     "h2split_endpoint_requests_active", "h2split_endpoint_latency_ewma_seconds",
                     "h2split_endpoint_ejected", "h2split_bpf_redirected_total",
                     "h2split_service_request_duration_seconds_bucket"):
            assert want in used, want


def test_kubernetes_source_names_callers_from_this_nodes_pods(node, build_dir):
    """The Kubernetes source's Pods (this node's, watched for opt-outs) name
    the callers too: a Deployment's pod, found by its cgroup pod<uid>."""
    from test_kubernetes_discovery import NODE_NAME, KubeBed
    from testbed.kube_api import pod as api_pod

    k = KubeBed(node, build_dir)
    servers = node.add_server_pods(["kserver-0"])
    svc = node.add_service("kecho", pods=servers)
    for item in node.services_doc()["items"]:
        k.api.apply(item["kind"], item)
    k.wait_vips({f"{svc.vip4}:{svc.port}"})
    uid = str(uuid.uuid4())
    client_pod = node.add_pod("pod" + uid)
    p = api_pod("web-7c9d8f-abcde", "default", uid=uid, node_name=NODE_NAME)
    p["metadata"]["labels"] = {"pod-template-hash": "7c9d8f"}
    p["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                         "name": "web-7c9d8f", "uid": str(uuid.uuid4()),
                                         "controller": True}]
    mark = k.mark()
    k.api.apply("pods", p)
    mark = k.wait_logged(mark, r"kube_state .*callers=1 ")
    k.wait_logged(mark, r"state_applied ")
    c = client_pod.grpc_client(svc.target4)
    assert c.unary(9)["ok"] == 9
    c.close()
    testbed.wait_for(
        lambda: metric(get(node, "/metrics")[1], "h2split_caller_requests_total",
                       caller_namespace="default", caller_workload="deployment/web",
                       service=f"default/kecho:{svc.port}", grpc_status="0") == 9,
        10, "9 RPCs of deployment/web in the caller series")
