# SPDX-License-Identifier: Apache-2.0
"""What the eBPF redirect adds to connect(): one run, one simulated node.

  connect_cost.py [--count 20000] [--rounds 5] [--json FILE] [--prefix h2sbench]

A client pod times blocking connect()+close() pairs (tests/bench/connect_loop.c,
CLOCK_MONOTONIC around each call) to a ClusterIP in four cases:
  none       before h2splitd ever ran: no BPF program attached anywhere;
  detached   h2splitd running, but the loop runs in the node's cgroup (outside
             the attached one) from the pod's netns: no program runs for it;
  passed     from the pod's own cgroup to a Service that did not opt in:
             connect4 and sockops run and let it through to kube-proxy's DNAT;
  redirected from the pod's own cgroup to an opted-in Service with h2splitd
             up: connect4 rewrites it, the connect completes at h2splitd.
"none", "detached" and "passed" reach one server pod through kube-proxy DNAT,
each on its own ClusterIP (so their 4-tuples never collide in TIME_WAIT).
"detached", "passed" and "redirected" run interleaved in ROUNDS rounds of
COUNT/ROUNDS so a noisy neighbour hits all of them alike. The target:
redirected <= 1.2x a plain connect to a ClusterIP ("detached").
"""

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402
from benchlib import log, testbed  # noqa: E402

PORT = 8080
WARMUP = 200  # untimed connects before each timed batch
CASES = ("none", "detached", "passed", "redirected")


class ConnectCost:
    """Pods and Services for the connect benchmark in an existing bed."""

    def __init__(self, node):
        self.node = node
        self.loop = benchlib.bench_bin("connect_loop")
        self.server = node.add_pod("cc-server")
        self.server.popen([self.loop, "serve", str(PORT)], name="connect-serve",
                          watch=True).wait_line("^ready", 15)
        self.client = node.add_pod("cc-client")
        # Room for every case's connects in one netns; each case has its own VIP anyway.
        node.run(["sh", "-c", "echo '1024 65535' > /proc/sys/net/ipv4/ip_local_port_range"])
        self.client.run(["sh", "-c",
                         "echo '1024 65535' > /proc/sys/net/ipv4/ip_local_port_range"])
        self.svc = {}
        for case in ("none", "detached", "passed"):
            self.svc[case] = node.add_service(f"cc-{case}", PORT, pods=[self.server],
                                              port_name="tcp", app_protocol=None)
        self.svc["redirected"] = node.add_service("cc-redirected", PORT, pods=[self.server],
                                                  port_name="tcp")
        self.results = {c: [] for c in CASES}

    def vips(self):
        return [self.svc[c].vip4 for c in CASES]

    def _argv(self, case, count, warmup=WARMUP):
        cmd = [self.loop, "run", self.svc[case].vip4, str(PORT), str(count), str(warmup)]
        # "detached": the pod's netns, the node's cgroup: no cgroup program runs.
        cgroup = self.node.node_cgroup if case == "detached" else self.client.cgroup
        return testbed.util.in_netns(self.client.netns, cmd, cgroup)

    def one(self, case, count):
        r = testbed.util.run(self._argv(case, count), timeout=120 + count / 200,
                             env=testbed.util.child_env())
        res = json.loads(r.stdout)
        self.results[case].append(res)
        return res

    def before_daemon(self, count, rounds):
        """Case "none": call before h2splitd (or anything) attached programs."""
        for _ in range(rounds):
            self.one("none", count // rounds)

    def with_daemon(self, count, rounds):
        """Cases detached/passed/redirected, interleaved; returns a check that
        h2splitd's BPF counter saw exactly the redirected case's connects."""
        ctl = os.path.join(benchlib.build_dir(), "h2splitctl")
        before = _counter(ctl, self.node, "redirected")
        for _ in range(rounds):
            for case in ("detached", "passed", "redirected"):
                self.one(case, count // rounds)
        counted = _counter(ctl, self.node, "redirected") - before
        return {"redirected_counter": counted, "expected": rounds * (count // rounds + WARMUP)}

    def summary(self):
        out = {}
        for case in CASES:
            runs = self.results[case]
            if not runs:
                continue
            n = sum(r["count"] for r in runs)

            def wmean(key, runs=runs, n=n):
                return round(sum(r[key] * r["count"] for r in runs) / n / 1000, 2)

            def median(key, runs=runs):
                v = sorted(r[key] for r in runs)
                return round(v[len(v) // 2] / 1000, 2)
            out[case] = {"count": n, "failed": sum(r["failed"] for r in runs),
                         "connect_mean_us": wmean("connect_mean_ns"),
                         "connect_p50_us": median("connect_p50_ns"),
                         "connect_p99_us": median("connect_p99_ns"),
                         "close_mean_us": wmean("close_mean_ns"),
                         "total_mean_us": wmean("total_mean_ns"),
                         "total_p50_us": median("total_p50_ns"),
                         "total_p99_us": median("total_p99_ns"),
                         "rounds": len(runs)}
        base = out.get("detached")
        if base:
            for case, v in out.items():
                v["ratio_mean_vs_plain"] = round(v["total_mean_us"] / base["total_mean_us"], 3)
                v["ratio_p50_vs_plain"] = round(v["total_p50_us"] / base["total_p50_us"], 3)
        return out


def run_standalone(args):
    benchlib.raise_fd_limit()
    build = benchlib.build_dir()
    with testbed.Node(prefix=args.prefix) as node:
        cc = ConnectCost(node)
        log(f"connect cost: case none, {args.count} connects")
        cc.before_daemon(args.count, args.rounds)
        d = start_h2splitd(node, build, workers=args.workers)
        testbed.wait_for(lambda: redirected(node, cc), 15, "h2splitd to redirect cc-redirected")
        log(f"connect cost: detached/passed/redirected, {args.rounds} rounds")
        check = cc.with_daemon(args.count, args.rounds)
        d.stop()
        if check["redirected_counter"] != check["expected"]:
            log(f"WARNING: h2splitd counted {check['redirected_counter']} redirects, "
                f"expected {check['expected']}")
        return cc.summary()


def start_h2splitd(node, build, workers=1, lb_policy=None, extra=()):
    """h2splitd for a bench bed, logging at info to its log file (not watched,
    so no thread reads it under load); returns once it is redirecting."""
    argv = [os.path.join(build, "h2splitd"), *node.daemon_args(), "--listen",
            "169.254.20.11:15001", "--workers", str(workers), "--log-level", "info",
            "--drain-timeout", "2",
            # One load pod opens every connection of a run (up to 10,000 held
            # idle); the per-pod limit guards a node against such a pod, and
            # none of the peers has one.
            "--max-connections-per-pod", "0"]
    if lb_policy:
        argv += ["--lb-policy", lb_policy]
    p = node.popen(argv + list(extra), name="h2splitd")
    benchlib.wait_log(p, r"msg=redirecting", 20)
    return p


def redirected(node, cc):
    """True once a connect to the opted-in VIP is redirected (h2splitctl counters)."""
    ctl = os.path.join(benchlib.build_dir(), "h2splitctl")
    before = _counter(ctl, node, "redirected")
    testbed.util.run(cc._argv("redirected", 1, warmup=0), timeout=30, check=False,
                     env=testbed.util.child_env())
    return _counter(ctl, node, "redirected") > before


def _counter(ctl, node, name):
    r = subprocess.run([ctl, "--bpffs", node.bpffs, "-o", "json", "counters"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode:
        return 0
    return json.loads(r.stdout).get(name, 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--prefix", default=benchlib.BENCH_PREFIX)
    ap.add_argument("--json")
    args = ap.parse_args()
    res = run_standalone(args)
    text = json.dumps(res, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
