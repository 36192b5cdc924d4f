# SPDX-License-Identifier: Apache-2.0
"""What an operator sees: the admin API's readiness, metrics that agree with
what the bed did, h2splitctl's listings (with the daemon up and down), and
the demo itself."""

import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest

import testbed

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADMIN = "http://127.0.0.1:9901"


def ctl(node, build_dir, *args, check=True):
    r = node.run([os.path.join(build_dir, "h2splitctl"), "--bpffs", node.bpffs, *args],
                 check=False)
    if check:
        assert r.returncode == 0, f"h2splitctl {args}: rc={r.returncode} {r.stderr}"
    return r


def get(node, path):
    """(status, body) of GET path on the admin API, from inside the node netns."""
    r = node.run(["curl", "-s", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}",
                  ADMIN + path], check=False)
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


def metric(text, name, **labels):
    """Sum of the samples of |name| whose labels include |labels|."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^([a-z0-9_]+)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def start(node, build_dir, *extra):
    d = node.popen([os.path.join(build_dir, "h2splitd"), *node.daemon_args(), *extra],
                   name="h2splitd", watch=True, stderr=subprocess.STDOUT)
    return d


def test_readyz_follows_sync_redirecting_and_drain(node, build_dir):
    servers = node.add_server_pods(["server-0"])
    svc = node.add_service("echo", 50051, pods=servers)
    os.rename(node.services_file, node.services_file + ".hold")  # not synced yet
    d = start(node, build_dir, "--drain-timeout", "20")
    testbed.wait_for(lambda: get(node, "/healthz")[0] == 200, 15, "/healthz to answer")
    code, body = get(node, "/readyz")
    assert code == 503 and "discovery not synced" in body, (code, body)

    os.rename(node.services_file + ".hold", node.services_file)
    d.wait_line(r"msg=redirecting", 15)
    # Ready, naming what every worker applied: the first state, the file as written.
    assert get(node, "/readyz") == (200, f"ready generation=1 version={node.file_version}\n")

    # An L4-path connection (not HTTP/2) keeps the drain going until it closes.
    client = node.add_pod("client-0")
    hold = client.popen([testbed.python(), "-c",
                         "import socket,sys; s=socket.create_connection((sys.argv[1], 50051));"
                         "s.sendall(b'GET / HTTP/1.1\\r\\n'); print('held', flush=True);"
                         "sys.stdin.read()", svc.vip4], watch=True, stdin=subprocess.PIPE)
    hold.wait_line("held", 15)
    testbed.wait_for(lambda: "l4_connections_active 1" in get(node, "/metrics")[1], 10,
                     "the held connection to reach the L4 path")
    d.send_signal(signal.SIGTERM)
    d.wait_line(r"msg=draining", 10)
    code, body = get(node, "/readyz")
    assert code == 503 and "draining" in body and "not redirecting" in body, (code, body)
    hold.stdin.close()
    d.wait_line(r"msg=drained", 15)
    assert d.wait(10) == 0


def test_metrics_and_h2splitctl_agree_with_the_rpcs(node, build_dir):
    servers = node.add_server_pods(["server-0", "server-1", "server-2"])
    svc = node.add_service("echo", 50051, pods=servers)
    d = start(node, build_dir, "--lb-policy", "round_robin")
    d.wait_line(r"msg=redirecting", 15)
    c = node.add_pod("client-0").grpc_client(svc.target4)
    r = c.unary(300)
    assert r["ok"] == 300 and sorted(r["pods"].values()) == [100, 100, 100], r
    c.close()

    code, text = get(node, "/metrics")
    assert code == 200
    service = f"default/echo:{svc.port}"
    assert metric(text, "h2split_endpoint_requests_total", service=service) == 300
    for s in servers:
        assert metric(text, "h2split_endpoint_requests_total", service=service,
                      endpoint=f"{s.ip4}:50051", pod=s.name) == 100, s.name
    assert metric(text, "h2split_service_grpc_responses_total", service=service,
                  grpc_status="0") == 300
    assert metric(text, "h2split_service_request_duration_seconds_count",
                  service=service) == 300
    assert metric(text, "h2split_bpf_redirected_total") >= 1

    eps = json.loads(ctl(node, build_dir, "-o", "json", "endpoints").stdout)
    (entry,) = [s for s in eps["services"] if s["service"] == service]
    assert sorted((e["pod"], e["requests"]) for e in entry["endpoints"]) == \
        [(s.name, 100) for s in servers]
    table = ctl(node, build_dir, "endpoints").stdout
    assert all(re.search(rf"{s.ip4}:50051\s+{s.name}\s+usable\s+0\s+100\s", table)
               for s in servers), table

    # top: a live rate while a client runs, as JSON for scripts.
    c = node.add_pod("client-1").grpc_client(svc.target4)
    job = c.start("unary", 3000)
    sample = json.loads(ctl(node, build_dir, "-o", "json", "top", "-n", "1",
                            "--interval", "0.5").stdout)
    assert sum(e["rps"] for e in sample) > 0, sample
    assert c.wait(job)["ok"] == 3000
    c.close()

    svcs = json.loads(ctl(node, build_dir, "-o", "json", "services").stdout)
    assert json.dumps(svcs).count(svc.vip4) >= 1, svcs

    d.stop()
    r = ctl(node, build_dir, "-o", "json", "endpoints", check=False)
    assert r.returncode == 3 and "needs a running h2splitd" in r.stderr, r
    status = json.loads(ctl(node, build_dir, "-o", "json", "status").stdout)
    assert json.dumps(status).count("h2s_connect4") >= 1, status
    counters = json.loads(ctl(node, build_dir, "-o", "json", "counters").stdout)
    assert counters["redirected"] >= 2, counters


def test_demo_runs_and_every_phase_behaves(require_bed, build_dir):
    r = subprocess.run([sys.executable, os.path.join(REPO, "tests", "demo.py")],
                       env={**os.environ, "H2SPLIT_BUILD": build_dir, "NO_COLOR": "1"},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    for phase in ("phase_kube_proxy", "phase_h2split_on", "phase_h2split_scale_out",
                  "phase_fail_open"):
        assert re.search(rf"OK\s+{phase}", r.stdout), r.stdout[-2000:]
    assert os.path.getsize(os.path.join(build_dir, "demo", "demo.png")) > 1000
