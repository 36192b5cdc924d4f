# SPDX-License-Identifier: Apache-2.0
"""Soak: steady gRPC load through h2splitd while pods scale in and out every
few seconds. At the end: zero failed RPCs, RSS with no growth trend, and the
daemon's file descriptors back to their baseline.

H2S_SOAK_SECONDS sets the length (60 in `make test`, 600 in `make soak`)."""

import os
import re
import subprocess
import time

import testbed

SECONDS = float(os.environ.get("H2S_SOAK_SECONDS", "60"))
CLIENTS = 4
ROUND_RPCS = 100   # per client per round, 4 in flight each


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid):
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return sorted(out)


def metric(node, name):
    r = node.run(["curl", "-s", "--max-time", "5", "http://127.0.0.1:9901/metrics"])
    total = 0.0
    for line in r.stdout.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_soak_scaling_under_load(node, build_dir):
    servers = node.add_server_pods([f"server-{i}" for i in range(3)])
    svc = node.add_service("echo", 50051, pods=servers)
    d = node.popen([os.path.join(build_dir, "h2splitd"), *node.daemon_args()],
                   name="h2splitd", watch=True, stderr=subprocess.STDOUT)
    d.wait_line(r"msg=redirecting", 20)
    base_fds, base_targets = fds(d.pid), fd_targets(d.pid)
    clients = testbed.open_clients([node.add_pod(f"client-{i}") for i in range(CLIENTS)],
                                   svc.target4)
    spare = node.add_server_pods(["server-3", "server-4"])
    live, ok, failures, samples, events = list(servers), 0, {}, [], 0
    generation = metric(node, "h2split_state_generation")
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        for r in testbed.unary_all(clients, ROUND_RPCS, concurrency=4):
            ok += r["ok"]
            for code, n in r["errors"].items():
                failures[code] = failures.get(code, 0) + n
        samples.append(rss_kib(d.pid))
        # Scale: every round adds a spare pod or removes the oldest one.
        if events % 2 == 0:
            live.append(spare.pop(0))
        else:
            spare.append(live.pop(0))
        events += 1
        node.set_endpoints(svc, live)
        generation += 1
        testbed.wait_for(lambda: metric(node, "h2split_state_generation") >= generation, 10,
                         "h2splitd to apply the endpoint change")

    for c in clients:
        c.close()
    assert not failures, f"{failures} failed of {ok + sum(failures.values())} RPCs"
    assert ok >= CLIENTS * ROUND_RPCS * 2, ok
    assert events >= 4, f"only {events} scale events in {SECONDS:g}s"

    # No growth trend: the second half's peak stays within the first half's,
    # plus allocator slack.
    half = len(samples) // 2
    first, second = max(samples[:half]), max(samples[half:])
    if not testbed.sanitized():  # ASan's quarantine keeps freed memory resident
        assert second <= first * 1.10 + 2048, f"RSS samples (KiB) {samples}"

    # Every connection gone once nothing is routed any more. What may stay is
    # one cached netns handle per client pod (netns.c keeps them 60 s idle).
    node.set_endpoints(svc, [])

    def leftovers():
        extra = fd_targets(d.pid)
        for t in base_targets:
            if t in extra:
                extra.remove(t)
        return extra

    def settled():
        extra = leftovers()
        return all(t.startswith("net:[") for t in extra) and len(extra) <= CLIENTS
    try:
        testbed.wait_for(settled, 30, "h2splitd's fds back to baseline")
    except TimeoutError:
        raise AssertionError(f"fds left over: {leftovers()}") from None
    assert metric(node, "h2split_downstream_connections_active") == 0
    assert metric(node, "h2split_upstream_connections_active") == 0
