# SPDX-License-Identifier: Apache-2.0
"""h2split beside another socket load balancer (Cilium's socket-LB, Calico's
connect-time LB), on the simulated node. The stand-in (socklb.bpf.c) rewrites
a ClusterIP:port to one pod at connect4/6, as those do, and is attached to the
bed's cgroups: the pods' cgroup that h2splitd attaches to ("same"), its parent
("ancestor") or the client pod's own cgroup ("pod"), before or after h2splitd
starts, plain or with BPF_F_PREORDER / BPF_F_BEFORE. Where h2split's connect4 runs first (README,
"With Cilium or Calico eBPF") it still takes the opted-in Service: RPCs spread
over every pod and getpeername() says ClusterIP, while the stand-in's rewrite
of a Service h2split does not take keeps working. Where the stand-in runs
first, or where h2split's attachment hides an old-style (override) one from
the pods, h2splitd says so: a log line, /readyz, h2split_foreign_socket_programs
and h2splitctl status."""

import json
import os
import re
import subprocess

import pytest

import testbed
from socklb import SockLB

ADMIN = "http://127.0.0.1:9901"
PORT = 50051
RPCS = 30
SCAN_WAIT = 30  # the daemon re-scans every 5 s: a deadline, not a pace
HOOKS = ("connect4", "connect6")


class Bed:
    """Three server pods behind the opted-in Service "grpc"; "other", not opted
    in, lists only server-0 and server-1, and the stand-in sends it to server-2,
    so an RPC on server-2 is one the stand-in rewrote."""

    def __init__(self, node, build_dir):
        self.node, self.build_dir = node, build_dir
        self.servers = node.add_server_pods([f"server-{i}" for i in range(3)])
        self.client = node.add_pod("client")
        self.grpc = node.add_service("grpc", PORT, pods=self.servers)
        self.other = node.add_service("other", PORT, pods=self.servers[:2], app_protocol=None)
        self.lb = SockLB(node)
        self.lb.set(self.grpc.vip4, PORT, self.servers[0].ip4)
        self.lb.set(self.other.vip4, PORT, self.servers[2].ip4)
        self.daemon = None

    def start(self, env=None):
        argv = [os.path.join(self.build_dir, "h2splitd"), *self.node.daemon_args(),
                "--log-level", "debug"]
        self.daemon = self.node.popen(argv, name="h2splitd", watch=True,
                                      stderr=subprocess.STDOUT, env=env)
        self.daemon.wait_line(r"msg=redirecting", 20)

    def stop(self):
        """Stop h2splitd, take its programs off and every stand-in link."""
        if self.daemon and self.daemon.poll() is None:
            self.daemon.stop(timeout=10)
        self.daemon = None
        self.lb.detach_all()
        self.ctl("uninstall", check=False)

    def ctl(self, *args, check=True):
        r = subprocess.run([os.path.join(self.build_dir, "h2splitctl"), "--bpffs",
                            self.node.bpffs, "-o", "json", *args],
                           capture_output=True, text=True, timeout=30)
        if check:
            assert r.returncode == 0, f"h2splitctl {args}: {r.stderr}"
            return json.loads(r.stdout)
        return r

    def admin(self, path):
        r = self.node.run(["curl", "-s", "--max-time", "5", "-o", "-", "-w", "\n%{http_code}",
                           ADMIN + path], check=False)
        body, _, code = r.stdout.rpartition("\n")
        return int(code or 0), body

    def foreign_metric(self, hook="connect4", position="before"):
        _, text = self.admin("/metrics")
        m = re.search(rf'^h2split_foreign_socket_programs\{{hook="{hook}",'
                      rf'position="{position}"\}} (\d+)$', text, re.M)
        assert m, "h2split_foreign_socket_programs missing from /metrics"
        return int(m.group(1))

    def rpcs(self, svc):
        """{pod: RPCs} of RPCS unary RPCs on one new channel to svc's ClusterIP."""
        with self.client.grpc_client(f"{svc.vip4}:{PORT}") as c:
            r = c.unary(RPCS)
        assert r["ok"] == RPCS, r
        return r["pods"]

    def peername(self, svc):
        """What getpeername() says in the client pod after connect(ClusterIP)."""
        code = ("import socket; s = socket.create_connection(('%s', %d), 5); "
                "print(s.getpeername()[0])" % (svc.vip4, PORT))
        return self.client.run([testbed.python(), "-c", code]).stdout.strip()

    def level(self, where):
        return {"same": self.node.pods_cgroup, "ancestor": self.node.cgroup_root,
                "pod": self.client.cgroup}[where]


@pytest.fixture(scope="module")
def bed(module_node, build_dir):
    b = Bed(module_node, build_dir)
    yield b
    b.stop()


@pytest.fixture
def fresh(bed):
    """Every test starts with nothing attached and ends the same way."""
    bed.stop()
    yield bed
    bed.stop()


def assert_h2split_takes_grpc(b):
    hits = b.lb.hits(b.grpc.vip4, PORT)
    pods = b.rpcs(b.grpc)
    assert set(pods) == {s.name for s in b.servers}, f"h2split did not spread: {pods}"
    assert b.peername(b.grpc) == b.grpc.vip4
    assert b.lb.hits(b.grpc.vip4, PORT) == hits, "the stand-in saw the ClusterIP first"


def assert_standin_keeps_other(b):
    hits = b.lb.hits(b.other.vip4, PORT)
    assert b.rpcs(b.other) == {"server-2": RPCS}, "the stand-in's rewrite did not apply"
    assert b.peername(b.other) == b.servers[2].ip4
    assert b.lb.hits(b.other.vip4, PORT) >= hits + 2


def wait_logged(b, pattern):
    """Wait for h2splitd to have logged a line matching ``pattern`` (since it started)."""
    testbed.wait_for(lambda: any(re.search(pattern, line) for line in list(b.daemon.lines)),
                     SCAN_WAIT, f"h2splitd to log {pattern!r}")


def wait_metric(b, position, want):
    testbed.wait_for(lambda: all(b.foreign_metric(h, position) == want for h in HOOKS),
                     SCAN_WAIT, f"h2split_foreign_socket_programs{{position={position}}} "
                     f"to be {want} for {HOOKS}")


def assert_reports_after(b):
    """The stand-in is seen, after h2split's connect4/6: no warning anywhere."""
    wait_metric(b, "after", 1)
    assert all(b.foreign_metric(h, "before") == 0 for h in HOOKS)
    code, body = b.admin("/readyz")
    assert code == 200 and "warning" not in body, body
    st = b.ctl("status")
    mine = sorted((p["hook"], p["position"]) for p in st["foreign_programs"]
                  if p["id"] in b.lb.prog_ids.values())
    assert mine == [(h, "after") for h in HOOKS], st
    assert st["connect_first"] == "h2split"
    for h in HOOKS:
        wait_logged(b, rf"foreign_socket_program hook={h} id={b.lb.prog_ids[h]} "
                       rf"name=socklb_{h} .*position=after")


@pytest.mark.parametrize("where", ["ancestor", "same", "pod"])
def test_h2split_first_over_a_socket_lb_attached_before_it(fresh, where):
    b = fresh
    b.lb.attach(b.level(where))
    assert b.rpcs(b.grpc) == {"server-0": RPCS}  # the stand-in alone: one pod
    b.start()
    assert_h2split_takes_grpc(b)
    assert_standin_keeps_other(b)
    assert_reports_after(b)


@pytest.mark.parametrize("where", ["ancestor", "same", "pod"])
def test_h2split_first_over_a_socket_lb_attached_after_it(fresh, where):
    b = fresh
    b.start()
    b.lb.attach(b.level(where), before=where == "same")  # BPF_F_BEFORE: head of the list
    assert_reports_after(b)
    assert_h2split_takes_grpc(b)
    assert_standin_keeps_other(b)


def test_preorder_socket_lb_above_sees_vip_first_and_h2splitd_says_so(fresh):
    b = fresh
    b.start()
    assert_h2split_takes_grpc(b)
    pins = b.lb.attach(b.node.cgroup_root, preorder=True)  # runs before h2split's
    wait_metric(b, "before", 1)
    code, body = b.admin("/readyz")
    assert code == 200, body
    st = b.ctl("status")
    assert st["connect_first"] == "other"
    for h in HOOKS:
        pid = b.lb.prog_ids[h]
        wait_logged(b, rf"level=warn msg=foreign_socket_program hook={h} id={pid} "
                       rf"name=socklb_{h} cgroup={re.escape(b.node.cgroup_root)} "
                       rf"position=before")
        assert (f"warning: {h} program {pid} (socklb_{h}, at {b.node.cgroup_root}) runs "
                f"before h2split") in body, body
        assert {"hook": h, "id": pid, "name": f"socklb_{h}", "cgroup": b.node.cgroup_root,
                "position": "before"} in st["foreign_programs"]
    text = subprocess.run([os.path.join(b.build_dir, "h2splitctl"), "--bpffs", b.node.bpffs,
                           "status"], capture_output=True, text=True, timeout=30).stdout
    assert "sees the ClusterIP first" in text, text
    # What that costs: the stand-in takes the Service, h2split never sees it.
    assert b.rpcs(b.grpc) == {"server-0": RPCS}
    assert b.peername(b.grpc) == b.servers[0].ip4
    assert_standin_keeps_other(b)
    # Gone again: the warning goes, and h2split takes new channels.
    b.lb.detach(pins)
    wait_metric(b, "before", 0)
    assert b.admin("/readyz")[1].count("\n") == 1
    assert_h2split_takes_grpc(b)


def test_without_preorder_a_deeper_cgroup_runs_first(fresh):
    """Kernels before 6.17 (H2SPLIT_BPF_PREORDER=0 here): h2split attached to
    the pods' cgroup runs before a program of its parent, not before one of
    its own cgroup that was attached earlier nor one of a pod's own cgroup;
    h2splitd says which."""
    b = fresh
    b.lb.attach(b.node.cgroup_root)
    b.start(env={"H2SPLIT_BPF_PREORDER": "0"})
    assert_h2split_takes_grpc(b)
    assert_reports_after(b)
    b.stop()

    for where in ("same", "pod"):  # attached earlier to its cgroup, or one below it
        b.lb.attach(b.level(where))
        b.start(env={"H2SPLIT_BPF_PREORDER": "0"})
        wait_metric(b, "before", 1)
        body = b.admin("/readyz")[1]
        for h in HOOKS:
            assert (f"warning: {h} program {b.lb.prog_ids[h]} (socklb_{h}, at "
                    f"{b.level(where)}) runs before h2split") in body, body
        assert b.ctl("status")["connect_first"] == "other"
        assert b.rpcs(b.grpc) == {"server-0": RPCS}
        assert_standin_keeps_other(b)
        b.stop()


def test_an_override_attachment_above_is_hidden_by_h2split_and_h2splitd_says_so(fresh):
    """A program attached the old way (no link, BPF_F_ALLOW_OVERRIDE) above
    h2split's cgroup yields to anything attached below it: h2split's attachment
    takes it away from the pods, and h2splitd says so."""
    b = fresh
    b.lb.attach_override(b.node.cgroup_root)
    assert b.rpcs(b.other) == {"server-2": RPCS}  # the stand-in works on its own
    b.start()
    wait_metric(b, "overridden", 1)
    code, body = b.admin("/readyz")
    assert code == 200, body
    for h in HOOKS:
        pid = b.lb.prog_ids[h]
        assert (f"warning: {h} program {pid} (socklb_{h}, at {b.node.cgroup_root}) is "
                f"overridden") in body, body
        wait_logged(b, rf"level=warn msg=foreign_socket_program hook={h} id={pid} "
                       rf"name=socklb_{h} .*position=overridden")
    st = b.ctl("status")
    assert sorted(p["position"] for p in st["foreign_programs"]
                  if p["id"] in b.lb.prog_ids.values()) == ["overridden", "overridden"]
    # What it costs: the stand-in no longer runs for the pods.
    assert_h2split_takes_grpc(b)
    assert set(b.rpcs(b.other)) <= {"server-0", "server-1"}  # kube-proxy, not the stand-in
