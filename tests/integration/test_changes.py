# SPDX-License-Identifier: Apache-2.0
"""Changes of the desired state while clients are connected: h2splitd applies
a change in every worker before it redirects by it, reports what it applied
(generation and the source's version), and no RPC fails because an operator
opted a Service out, back in, or renamed its port.

Each change below returns only once the daemon reports the services file as
last written (testbed ``wait_applied``); the clients' own reaction to a GOAWAY
is waited for through what they report (their connections, their RPC counts).
"""

import json
import os
import subprocess

import pytest

import testbed

ADMIN = "http://127.0.0.1:9901"
LISTEN = "169.254.20.11:15001"
PACE_MS = 5


def admin(node, path):
    r = node.run(["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}", ADMIN + path],
                 check=False)
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


def services(node):
    code, body = admin(node, "/services")
    assert code == 200, f"/services answered {code}: {body[:300]}"
    return json.loads(body)


def metric(node, name, result=None):
    code, body = admin(node, "/metrics")
    assert code == 200, body[:300]
    prefix = f'{name}{{result="{result}"}} ' if result else name + " "
    for line in body.splitlines():
        if line.startswith(prefix):
            return float(line.split()[1])
    raise AssertionError(f"{prefix.strip()} not in /metrics")


def connections(pod, dst):
    """The pod's established TCP connections to ``dst`` (ADDR:PORT)."""
    return pod.run(["ss", "-Htn", "state", "established", "dst", dst]).stdout.strip()


@pytest.fixture
def bed(node, build_dir):
    servers = node.add_server_pods(["server-0", "server-1"])
    svc = node.add_service("echo", pods=servers)
    d = node.popen([os.path.join(build_dir, "h2splitd"), *node.daemon_args(),
                    "--log-level", "info"], name="h2splitd", watch=True,
                   stderr=subprocess.STDOUT)
    d.wait_line(r"msg=redirecting", 30)
    node.wait_applied()
    return node, svc, d


def test_applied_generation_is_reported_everywhere(bed, build_dir):
    node, svc, _ = bed
    before = services(node)
    code, body = admin(node, "/readyz")
    assert code == 200, body
    assert body == f"ready generation={before['generation']} version={node.file_version}\n"
    assert before["version"] == node.file_version

    node.add_pod("server-2").start_grpc_server()
    node.set_endpoints(svc, ["server-0", "server-1", "server-2"])  # returns once applied
    after = services(node)
    assert after["version"] == node.file_version != before["version"]
    assert after["generation"] > before["generation"]
    assert {s["name"]: s["endpoints_usable"] for s in after["services"]} == {"echo": 3}
    assert metric(node, "h2split_state_generation") == after["generation"]

    ctl = [os.path.join(build_dir, "h2splitctl"), "--bpffs", node.bpffs]
    daemon = json.loads(node.run(ctl + ["-o", "json", "status"]).stdout)["daemon"]
    assert daemon["reached"] and daemon["ready"], daemon
    assert (daemon["generation"], daemon["version"]) == (after["generation"], node.file_version)
    r = node.run(ctl + ["status"])
    assert f"applied generation {after['generation']}, version {node.file_version}" in r.stdout


@pytest.mark.parametrize("opt_out", [
    {"annotations": {"h2split.io/enabled": "false"}},
    {"app_protocol": None},
], ids=["annotation-false", "appProtocol-removed"])
def test_opt_out_and_back_in_fails_no_rpc(bed, opt_out):
    """One busy channel (an RPC every 5 ms) and a stream of new channels (a
    new connection per RPC) keep running while the Service is opted out and
    back in: the open connection is told to go (GOAWAY) and reconnects
    straight to the ClusterIP, new connects go direct, then through h2splitd
    again, and the busy channel's direct connection is adopted (closed while
    idle: it reconnects through h2splitd). No RPC fails but, at most, the one
    gRPC core starts on the connection adoption closed."""
    node, svc, _ = bed
    busy = node.add_pod("busy-0").grpc_client(svc.target4)
    fresh = node.add_pod("fresh-0").grpc_client(svc.target4)
    busy_job, fresh_job = busy.loop(PACE_MS), fresh.loop(4 * PACE_MS, fresh=True)
    try:
        busy.wait_progress(50)
        fresh.wait_progress(10)
        assert connections(busy.place, LISTEN), "the busy channel is not redirected"

        node.update_service(svc, **opt_out)
        now = services(node)
        assert not now["services"], now
        assert [r["name"] for r in now["retired"]] == ["echo"], now
        # The open connection got GOAWAY: the channel reconnects, now direct.
        testbed.wait_for(lambda: not connections(busy.place, LISTEN)
                         and connections(busy.place, svc.target4), 30,
                         "the busy channel to reconnect straight to the ClusterIP")
        redirected = metric(node, "h2split_downstream_connections_total")
        busy.wait_progress(50)
        fresh.wait_progress(10)
        assert metric(node, "h2split_downstream_connections_total") == redirected, \
            "connections were redirected to a Service that is opted out"
        assert metric(node, "h2split_downstream_retired_total") >= 1

        node.update_service(svc, annotations={}, app_protocol="kubernetes.io/h2c")
        assert [s["name"] for s in services(node)["services"]] == ["echo"]
        testbed.wait_for(lambda: metric(node, "h2split_downstream_connections_total")
                         >= redirected + 5, 30, "new channels to be redirected again")
        # The busy channel's direct connection is adopted: closed while idle,
        # the channel reconnects through h2splitd.
        testbed.wait_for(lambda: connections(busy.place, LISTEN), 30,
                         "the busy channel to be adopted")
        busy.wait_progress(50)
    finally:
        busy_sum, fresh_sum = busy.stop_loop(busy_job), fresh.stop_loop(fresh_job)
    assert fresh_sum["errors"] == {}, f"new channels: {fresh_sum['errors']} {fresh_sum['details']}"
    assert fresh_sum["ok"] == fresh_sum["n"] > 0
    # Adoption's one abortive close may cost gRPC core the one RPC it starts
    # on the closed connection (docs/architecture.md, "Adoption"); nothing else.
    assert busy_sum["errors"] in ({}, {"UNAVAILABLE": 1}), \
        f"busy channel: {busy_sum['errors']} {busy_sum['details']}"
    assert busy_sum["ok"] >= busy_sum["n"] - 1 > 0
    assert metric(node, "h2split_adopted_connections_total", "idle") >= 1
    assert metric(node, "h2split_streams_refused_unknown_service_total") == 0


def test_port_rename_keeps_open_connections_served(bed):
    """Renaming the port changes the Service's id, which open connections were
    redirected under: they keep being served and are sent GOAWAY, and the
    channel's reconnect is redirected under the new id."""
    node, svc, _ = bed
    busy = node.add_pod("busy-0").grpc_client(svc.target4)
    job = busy.loop(PACE_MS)
    try:
        busy.wait_progress(50)
        old_id = services(node)["services"][0]["id"]
        redirected = metric(node, "h2split_downstream_connections_total")

        node.update_service(svc, port_name="grpc-main")
        now = services(node)
        assert [(s["name"], s["port_name"]) for s in now["services"]] == [("echo", "grpc-main")]
        assert [r["id"] for r in now["retired"]] == [old_id]
        assert now["services"][0]["id"] != old_id
        testbed.wait_for(lambda: metric(node, "h2split_downstream_connections_total")
                         > redirected, 30, "the channel to reconnect through h2splitd")
        busy.wait_progress(50)
    finally:
        summary = busy.stop_loop(job)
    assert summary["errors"] == {}, f"{summary['errors']} {summary['details']}"
    assert metric(node, "h2split_downstream_retired_total") >= 1


def start_next_daemon(node, build_dir, services_file, *args):
    """A second h2splitd beside the bed's, as a DaemonSet surge starts it: same
    pins, cgroup and listen address, its own admin port (9902) and services
    file (so the bed does not wait for it)."""
    return node.popen([os.path.join(build_dir, "h2splitd"), "--discovery", "file",
                       "--services-file", services_file, "--cgroup", node.pods_cgroup,
                       "--bpffs", node.bpffs, "--admin", "127.0.0.1:9902",
                       "--log-level", "info", *args], name="h2splitd-new", watch=True,
                      stderr=subprocess.STDOUT)


def daemon_metric(node, admin_port, name):
    r = node.run(["curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{admin_port}/metrics"])
    for line in r.stdout.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics of the daemon at :{admin_port}")


def pinned_max_entries(node, name):
    r = node.run(["bpftool", "-j", "map", "show", "pinned", os.path.join(node.bpffs, name)])
    return json.loads(r.stdout)["max_entries"]


def test_rolling_update_new_daemon_takes_nothing_before_its_first_sync(bed, build_dir):
    """A new h2splitd beside the old one (a DaemonSet surge) whose first sync
    has not come yet (here: its services file is not there) binds but does
    not listen, so the kernel keeps handing every redirected connect to the
    old daemon; once synced it takes its share and the liveness slot, and
    the old one drains. New channels connect throughout: no RPC fails."""
    node, svc, old = bed
    late_file = os.path.join(node.workdir, "services-new.json")
    fresh = node.add_pod("fresh-0").grpc_client(svc.target4)
    job = fresh.loop(4 * PACE_MS, fresh=True)
    try:
        fresh.wait_progress(10)
        new = start_next_daemon(node, build_dir, late_file)
        new.wait_line(r"msg=started", 30)
        fresh.wait_progress(25)  # 25 new connects while the new daemon is up, unsynced
        r = node.run(["curl", "-sS", "--max-time", "5", "http://127.0.0.1:9902/metrics"])
        assert "\nh2split_downstream_connections_total 0\n" in r.stdout, \
            "the unsynced daemon accepted connections"

        node.write_services_file(late_file)
        new.wait_line(r"msg=redirecting", 30)

        def new_has_connections():
            r = node.run(["curl", "-sS", "--max-time", "5", "http://127.0.0.1:9902/metrics"])
            return "\nh2split_downstream_connections_total 0\n" not in r.stdout
        testbed.wait_for(new_has_connections, 30, "the new daemon to take connects")
        old.send_signal(15)
        old.wait_line(r"msg=(drained|drain_timeout)", 60)
        assert old.wait(30) == 0
        fresh.wait_progress(10)
    finally:
        summary = fresh.stop_loop(job)
    assert summary["errors"] == {}, f"{summary['errors']} {summary['details']}"
    assert summary["ok"] == summary["n"] >= 45


def test_rolling_update_across_a_map_layout_change_fails_no_rpc(bed, build_dir):
    """An upgrade whose BPF maps changed layout (here another
    --max-redirected-sockets, which resizes the tuple maps) gets new maps
    while the old daemon and the attached programs still use the old ones. The
    old programs stop redirecting first (connects go direct) until the new
    daemon is ready; from then on every connect goes to the new daemon, never
    to the old one, which could not find their tuple records. New channels
    connect throughout: no RPC fails."""
    node, svc, old = bed
    assert pinned_max_entries(node, "h2s_sock_origdst") == 262144
    late_file = os.path.join(node.workdir, "services-new.json")
    fresh = node.add_pod("fresh-0").grpc_client(svc.target4)
    job = fresh.loop(4 * PACE_MS, fresh=True)
    try:
        fresh.wait_progress(10)
        new = start_next_daemon(node, build_dir, late_file, "--max-redirected-sockets", "131072")
        new.wait_line(r"msg=bpf_map_layout_switch", 30)
        new.wait_line(r"msg=started", 30)
        fresh.wait_progress(25)  # new connects while the new programs run, the daemon unsynced
        node.write_services_file(late_file)
        new.wait_line(r"msg=redirecting", 30)
        fresh.wait_progress(20)
        migrates = not any("reuseport_migration_unsupported" in line for line in new.lines)
        at_old = daemon_metric(node, 9901, "h2split_downstream_connections_total")
        fresh.wait_progress(30)
        if migrates:
            assert daemon_metric(node, 9901, "h2split_downstream_connections_total") == \
                at_old, "the old daemon still took new connects after the new one was ready"
        old.send_signal(15)
        old.wait_line(r"msg=(drained|drain_timeout)", 60)
        assert old.wait(30) == 0
        fresh.wait_progress(10)
    finally:
        summary = fresh.stop_loop(job)
    assert summary["errors"] == {}, f"{summary['errors']} {summary['details']}"
    assert summary["ok"] == summary["n"] >= 85
    assert pinned_max_entries(node, "h2s_sock_origdst") == 131072
    assert pinned_max_entries(node, "h2s_conn_origdst") == 131072 // 4
    assert daemon_metric(node, 9902, "h2split_original_dst_missing_total") == 0


def fnv1a(s):
    h = 2166136261
    for b in s.encode():
        h = ((h ^ b) * 16777619) & 0xFFFFFFFF
    return h


def colliding_names():
    """Two Service names whose ids hash alike ("default/NAME:grpc", FNV-1a)."""
    seen = {}
    for i in range(1, 400000):
        name = f"svc-{(i * 2654435761) & 0xFFFFFFFF}"
        h = fnv1a(f"default/{name}:grpc")
        if h in seen and h != 0xFFFFFFFF:
            return sorted((seen[h], name))
        seen[h] = name
    raise AssertionError("no FNV-1a collision found")


def test_id_taken_by_another_service_never_routes_there(node, build_dir):
    """Service ids are hashes: when a colliding Service arrives that sorts
    first, it takes the id an existing Service's connections were redirected
    under (that one probes to the next id). Those connections' streams must
    never reach the newcomer's pods: they are refused (never processed, so the
    client retries them) and the connection told to reconnect, which is then
    redirected under the Service's new id."""
    first, second = colliding_names()
    pods = node.add_server_pods(["a-0", "b-0"])
    svc = node.add_service(second, pods=[pods[0]])
    d = node.popen([os.path.join(build_dir, "h2splitd"), *node.daemon_args(),
                    "--log-level", "info"], name="h2splitd", watch=True,
                   stderr=subprocess.STDOUT)
    d.wait_line(r"msg=redirecting", 30)
    node.wait_applied()
    old_id = services(node)["services"][0]["id"]
    busy = node.add_pod("busy-0").grpc_client(svc.target4)
    job = busy.loop(PACE_MS)
    try:
        busy.wait_progress(50)
        node.add_service(first, pods=[pods[1]])
        ids = {s["name"]: s["id"] for s in services(node)["services"]}
        assert ids == {first: old_id, second: old_id + 1}, ids
        testbed.wait_for(lambda: metric(node, "h2split_downstream_connections_total") >= 2,
                         30, "the channel to reconnect under the Service's new id")
        busy.wait_progress(50)
    finally:
        summary = busy.stop_loop(job)
    assert set(summary["pods"]) == {"a-0"}, f"RPCs reached another Service's pods: {summary}"
    assert summary["errors"] == {}, f"{summary['errors']} {summary['details']}"
    # At least the old connection; a reconnect that beat the map's re-pointing
    # to the new id is redirected under the old one and told to go again.
    assert metric(node, "h2split_downstream_retired_total") >= 1
    assert metric(node, "h2split_streams_refused_unknown_service_total") == 0


def listener_queue(node):
    """Connections waiting in the accept queues of every listener on the
    splitter's port (ss Recv-Q of listening sockets), summed."""
    out = node.run(["ss", "-Hltn", f"sport = :{LISTEN.rsplit(':', 1)[1]}"]).stdout
    return sum(int(line.split()[1]) for line in out.splitlines() if line.strip())


def test_a_closing_daemon_hands_its_queue_to_the_next(bed, build_dir):
    """Two daemons share the listen address during a rolling update. The old
    one is stopped while it is the only listener, so connects queue at it;
    then the new one becomes ready and the old one is killed with them still
    queued (none of them is ever accepted). They move to the new daemon's
    listeners when the old sockets close, instead of being reset: every
    client's RPC succeeds."""
    node, svc, old = bed
    new_file = os.path.join(node.workdir, "services-new.json")
    new = start_next_daemon(node, build_dir, new_file)
    new.wait_line(r"msg=started", 30)
    if any("reuseport_migration_unsupported" in line for line in new.lines):
        pytest.skip("the kernel cannot migrate a closing listener's queue (before 5.14)")
    old.send_signal(19)  # SIGSTOP: connects wait in its queues
    pod = node.add_pod("client-0")
    clients = [pod.popen([testbed.python(), "-m", "testbed.grpc_client", "--target",
                          svc.target4, "--count", "1", "--timeout", "60"],
                         name=f"grpc-client-{i}", watch=True) for i in range(10)]

    def queued_at_old():
        running = sum(c.poll() is None for c in clients)
        return running and listener_queue(node) == running and running
    waiting = testbed.wait_for(queued_at_old, 60, "the RPCs to queue at the stopped daemon")
    node.write_services_file(new_file)
    new.wait_line(r"msg=redirecting", 30)
    old.send_signal(9)  # its listeners close with connections still queued
    results = [json.loads(c.wait_line(r'^\{"cmd"', 90)) for c in clients]
    failed = [r for r in results if r["ok"] != r["n"]]
    assert not failed, f"{len(failed)} of 10 RPCs failed ({waiting} were queued): {failed[:2]}"
