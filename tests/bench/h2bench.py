# SPDX-License-Identifier: Apache-2.0
"""h2split's benchmark: HTTP/2 (gRPC-shaped) proxying against nghttpx, HAProxy
and nginx, plus the connect cost of the eBPF redirect. ``make bench`` runs it
and rewrites docs/benchmarks.md and its charts.

  h2bench.py [--smoke] [--workers 1] [--duration 5] [--docs DIR] [--json FILE] ...

One simulated node (tests/testbed, prefix h2sbench so it never waits for or
disturbs the test suite's bed): three backend pods run grpc_backend (C,
nghttp2, answers every POST with a gRPC message and grpc-status 0), a client
pod runs h2load with gRPC-shaped requests (POST, application/grpc, te:
trailers, a length-prefixed message). Targets, all balancing per request
over the same three pods with the same worker count:
  direct   h2load to one backend pod's IP: the floor;
  h2split  h2load to the Service's ClusterIP; connect4 redirects it to h2splitd;
  nghttpx / haproxy / nginx  on the node's address 169.254.1.1 (tests/bench/peers.py).
Phases: connect cost (connect_cost.py), idle connections (RSS per held h2
connection), streams in flight (RSS per 10 B request held open by the
backends' delay), closed-loop sweep (connections x streams x payload: req/s,
latency percentiles from h2load's per-request log, CPU seconds per 10k
requests from /proc utime+stime of the proxy's process tree, backend spread
from the backends' own counters), fixed-rate runs at 50% of nghttpx's
closed-loop maximum (latency at equal offered load), new connections per
second (conn_rate.c: preface + SETTINGS + one unary RPC + close per
connection, interleaved rounds; conns/s and proxy CPU per connection). Every
run is bounded by h2load -D (conn_rate -D) and a subprocess timeout.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402
import connect_cost  # noqa: E402
import peers  # noqa: E402
import report  # noqa: E402
from benchlib import log, testbed  # noqa: E402

GRPC_PORT = 50051
PATH = "/bench.Echo/Unary"
PROXIES = ("h2split", "nghttpx", "haproxy", "nginx")

FULL = dict(conns="1x1,4x32,64x16,512x4", payloads="10,1024,65536", rate_conns="64x16,4x32",
            duration=3.0, warmup=1.0, repeat=3, rate_repeat=5, idle_conns=8000,
            inflight="50x100", connect_count=20000, connect_rounds=5, calls_rounds=5,
            new_conns_rounds=5, new_conns_concurrency=16)
SMOKE = dict(conns="1x1,4x32", payloads="10,65536", rate_conns="4x8", duration=1.0, warmup=0.3,
             repeat=1, rate_repeat=1, idle_conns=200, inflight="20x50", connect_count=1000,
             connect_rounds=1, calls_rounds=1, new_conns_rounds=1, new_conns_concurrency=8)
# How long the backends hold every answer in the in-flight phase (grpc_backend's
# /control allows up to 10 s): all streams must be open before the first answer.
INFLIGHT_DELAY_S = 8.0
# The caller and method series, on (the defaults) and off: what they cost.
CALLS_VARIANTS = {
    "on": (),
    "off": ("--max-callers-per-service", "0", "--max-methods-per-service", "0"),
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="seconds, a tiny sweep, same figures")
    ap.add_argument("--workers", type=int, default=1, help="h2splitd --workers and every peer's")
    ap.add_argument("--backend-threads", type=int, default=1)
    ap.add_argument("--lb-policy", default=None, help="h2splitd --lb-policy (default: its own)")
    ap.add_argument("--peers", default=",".join(peers.ALL))
    ap.add_argument("--conns", help="connections x streams list, e.g. 1x1,4x32")
    ap.add_argument("--payloads", help="message payload sizes in bytes, e.g. 10,1024")
    ap.add_argument("--rate-conns", help="configs for the fixed-rate runs (10-byte payload)")
    ap.add_argument("--duration", type=float, help="seconds measured per h2load run")
    ap.add_argument("--warmup", type=float, help="h2load --warm-up-time, seconds")
    ap.add_argument("--repeat", type=int, help="rounds of every run (the report takes medians)")
    ap.add_argument("--rate-repeat", type=int, help="rounds of every fixed-rate run")
    ap.add_argument("--idle-conns", type=int)
    ap.add_argument("--inflight", help="connections x streams held open at once for the "
                    "in-flight RSS test, e.g. 100x100 (0x0: skip it)")
    ap.add_argument("--connect-count", type=int)
    ap.add_argument("--connect-rounds", type=int)
    ap.add_argument("--skip-connect", action="store_true")
    ap.add_argument("--calls-rounds", type=int, help="rounds of the series on/off runs (0: none)")
    ap.add_argument("--new-conns-rounds", type=int,
                    help="interleaved rounds of the new-connection rate phase (0: none)")
    ap.add_argument("--new-conns-concurrency", type=int,
                    help="connections conn_rate keeps in progress")
    ap.add_argument("--new-conns-only", action="store_true",
                    help="only the new-connection rate phase (writes no docs unless --docs)")
    ap.add_argument("--prefix", default=benchlib.BENCH_PREFIX)
    ap.add_argument("--json", help="results file (default BUILD/bench/results[-smoke].json)")
    ap.add_argument("--docs", help="write benchmarks.md and charts here (default: docs/ "
                    "for a full run, nothing for --smoke)")
    a = ap.parse_args(argv)
    for k, v in (SMOKE if a.smoke else FULL).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.conns = [tuple(map(int, c.split("x"))) for c in a.conns.split(",") if c]
    a.rate_conns = [tuple(map(int, c.split("x"))) for c in a.rate_conns.split(",") if c]
    a.payloads = [int(p) for p in a.payloads.split(",") if p]
    a.inflight = tuple(map(int, a.inflight.split("x")))
    a.peers = [p for p in a.peers.split(",") if p]
    if a.docs is None and not a.smoke and not a.new_conns_only:
        a.docs = os.path.join(benchlib.REPO_DIR, "docs")
    if a.json is None:
        a.json = os.path.join(benchlib.build_dir(), "bench",
                              "results-smoke.json" if a.smoke else "results.json")
    return a


def secs(x):
    return f"{int(round(x * 1000))}ms"


class Bench:
    def __init__(self, node, args):
        self.node, self.args = node, args
        self.build = benchlib.build_dir()
        self.backend_bin = benchlib.bench_bin("grpc_backend")
        self.work = os.path.join(node.workdir, "bench")
        os.makedirs(self.work, exist_ok=True)
        self.bodies = {p: benchlib.grpc_message(os.path.join(self.work, f"msg-{p}.bin"), p)
                       for p in args.payloads}
        self.procs = {}      # target -> Proc of its root process
        self.peer_objs = {}  # peer name -> peers.Peer
        self.urls = {}
        self.commands = {}
        self.notes = []
        self.runs = []
        self.dead = set()

    # ---- setup -------------------------------------------------------------

    def backends(self):
        argv = [self.backend_bin, "--port", str(GRPC_PORT), "--threads",
                str(self.args.backend_threads)]
        self.commands["backend"] = " ".join(argv)
        self.be = [self.node.add_pod(f"be-{i}") for i in range(3)]
        procs = [p.popen(argv, name="grpc-backend", watch=True) for p in self.be]
        for pr in procs:
            pr.wait_line("^ready", 15)
        self.client = self.node.add_pod("load")
        self.svc = self.node.add_service("bench", GRPC_PORT, pods=self.be)
        self.urls["direct"] = f"http://{self.be[0].ip4}:{GRPC_PORT}{PATH}"
        self.urls["h2split"] = f"http://{self.svc.vip4}:{GRPC_PORT}{PATH}"

    def start_h2splitd(self):
        p = connect_cost.start_h2splitd(self.node, self.build, self.args.workers,
                                        self.args.lb_policy)
        self.procs["h2split"] = p
        self.commands["h2splitd"] = " ".join(p.args[p.args.index("--") + 5:]
                                             if "--" in p.args else p.args)
        testbed.wait_for(lambda: self.post_ok("h2split"), 20,
                         "a gRPC call through h2splitd to succeed")

    def calls_cost(self, rounds, conns=4, streams=32, payload=10):
        """What the caller and method series cost: the 10 B 4x32 closed-loop run
        through h2splitd with them on and off, alternating, a fresh daemon each
        run (kind "calls_on" / "calls_off", so the sweep's figures never mix
        them in). Medians of req/s and of requests per proxy CPU-second."""
        runs = {v: [] for v in CALLS_VARIANTS}
        if "h2split" in self.procs:
            self.procs["h2split"].stop(timeout=10)
        for rnd in range(rounds):
            for v, extra in CALLS_VARIANTS.items():
                p = connect_cost.start_h2splitd(self.node, self.build, self.args.workers,
                                                self.args.lb_policy, extra)
                self.procs["h2split"] = p
                testbed.wait_for(lambda: self.post_ok("h2split"), 20,
                                 "a gRPC call through h2splitd to succeed")
                res = self.load("h2split", conns, streams, payload, kind=f"calls_{v}", rep=rnd)
                p.stop(timeout=10)
                if "error" in res or not res.get("cpu_s"):
                    self.notes.append(f"calls cost, {v}, round {rnd}: "
                                      f"{res.get('error', 'no CPU time measured')}")
                    continue
                runs[v].append({"req_s": res["req_s"], "req_per_cpu_s": round(
                    sum(res["backend_requests"]) / res["cpu_s"], 1)})
                log(f"calls cost round {rnd}, series {v}: {res['req_s']} req/s, "
                    f"{runs[v][-1]['req_per_cpu_s']} req per proxy CPU-second")
        out = {"shape": f"{conns}x{streams}", "payload": payload, "rounds": rounds, "runs": runs}
        if all(runs.values()):
            med = {v: {k: statistics.median(r[k] for r in rs) for k in ("req_s", "req_per_cpu_s")}
                   for v, rs in runs.items()}
            out.update(med)
            out["cost_per_cpu_s_pct"] = round(
                100 * (1 - med["on"]["req_per_cpu_s"] / med["off"]["req_per_cpu_s"]), 2)
        return out

    def start_peers(self):
        backends = [(p.ip4, GRPC_PORT) for p in self.be]
        for name in self.args.peers:
            cls = peers.ALL[name]
            if not benchlib.have(cls.tool):
                self.notes.append(f"{name}: `{cls.tool}` not installed, skipped")
                continue
            peer = cls(self.work, self.args.workers, backends)
            self.peer_objs[name] = peer
            self.urls[name] = f"{peer.url_base}{PATH}"
            self.commands[name] = peer.describe()
            self.start_peer(name)

    def start_peer(self, name):
        self.procs[name] = self.peer_objs[name].start(self.node)
        try:
            testbed.wait_for(lambda: self.post_ok(name), 20,
                             f"a gRPC call through {name} to succeed")
        except (TimeoutError, testbed.StopWaiting) as e:
            self.notes.append(f"{name}: did not come up: {e}")
            self.dead.add(name)

    def restart_all(self):
        """Fresh proxies for the next phase: what one phase left in a proxy's heap
        (an idle-connection burst, say) must not count against the next."""
        for t in list(self.procs):
            if t in self.dead:
                continue
            self.procs[t].stop(timeout=10)
            if t == "h2split":
                self.start_h2splitd()
            else:
                self.start_peer(t)

    def post_ok(self, target):
        p = self.procs.get(target)
        if p is not None and p.poll() is not None:
            raise testbed.StopWaiting(f"{target} exited ({p.returncode})\n{p.log_tail()}")
        r = self.client.run(["curl", "-s", "--http2-prior-knowledge", "--max-time", "2",
                             "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
                             "-H", "content-type: application/grpc", "-H", "te: trailers",
                             "--data-binary", "@" + self.bodies[self.args.payloads[0]],
                             self.urls[target]], check=False)
        return r.stdout.strip() == "200"

    def targets(self):
        return [t for t in ("direct", *PROXIES) if t in self.urls and t not in self.dead]

    # ---- measuring ---------------------------------------------------------

    def backend_stats(self):
        urls = [f"http://{p.ip4}:{GRPC_PORT}/stats" for p in self.be]
        r = self.node.run(["curl", "-s", "--http2-prior-knowledge", "--max-time", "5", *urls])
        stats = [dict(zip(line.split()[::2], map(int, line.split()[1::2])))
                 for line in r.stdout.splitlines() if line]
        if len(stats) != 3:
            raise RuntimeError(f"backend /stats: {r.stdout!r}")
        return stats

    def backend_counts(self):
        """([requests per backend], [accepted connections per backend]), totals."""
        stats = self.backend_stats()
        return [x["requests"] for x in stats], [x["conns"] for x in stats]

    def backend_arrived(self):
        """Complete requests the backends took in, answered or held: total."""
        return sum(x["arrived"] for x in self.backend_stats())

    def tree(self, target):
        p = self.procs.get(target)
        return benchlib.tree(p.pid) if p is not None else []

    def check_alive(self, target):
        p = self.procs.get(target)
        if p is not None and p.poll() is not None and target not in self.dead:
            self.dead.add(target)
            self.notes.append(f"{target} exited with status {p.returncode} during the "
                              f"benchmark; log tail:\n{p.log_tail(15)}")
        return target not in self.dead

    def load(self, target, conns, streams, payload, rps=None, kind="closed", rep=0):
        """One bounded h2load run against ``target``; returns its result dict."""
        a = self.args
        logf = os.path.join(self.work, f"h2load-{target}.log")
        argv = benchlib.h2load_argv(self.urls[target], self.bodies[payload], conns, streams,
                                    secs(a.duration), secs(a.warmup), rps=rps, log_file=logf)
        res = {"kind": kind, "target": target, "conns": conns, "streams": streams,
               "payload": payload, "rps_per_conn": rps, "rep": rep}
        if not self.check_alive(target):
            res["error"] = f"{target} is not running"
            self.runs.append(res)
            return res
        pids = self.tree(target)
        (c0, k0), t0 = self.backend_counts(), time.monotonic()
        (u0, s0) = benchlib.cpu_split(pids)
        cpu0 = u0 + s0
        try:
            r = self.client.run(argv, timeout=a.duration + a.warmup + 60, check=False)
            out = r.stdout + r.stderr
            res.update(benchlib.parse_h2load(out))
        except (ValueError, testbed.TestbedError) as e:
            res["error"] = str(e)[-1500:]
        (u1, s1), (c1, k1) = benchlib.cpu_split(pids), self.backend_counts()
        cpu1 = u1 + s1
        res["rss_kib_after"] = benchlib.rss_kib(pids) if pids else None
        res["wall_s"] = round(time.monotonic() - t0, 3)
        per_be = [b - x for x, b in zip(c0, c1)]
        res["backend_requests"] = per_be
        # Less the one connection per backend the /stats query itself opened.
        res["upstream_conns"] = sum(k1) - sum(k0) - len(self.be)
        served = sum(per_be)
        if target != "direct":
            res["cpu_s"] = round(cpu1 - cpu0, 3)
            res["cpu_util"] = round((cpu1 - cpu0) / res["wall_s"], 3)
            res["cpu_s_per_10k"] = round((cpu1 - cpu0) / served * 1e4, 4) if served else None
            # The kernel's share: syscalls, and the TCP work of veth
            # deliveries that runs in the sender's context.
            res["cpu_sys_s_per_10k"] = round((s1 - s0) / served * 1e4, 4) if served else None
        if "error" not in res:
            res["req_s"] = round(res["succeeded"] / a.duration, 1)
            res.update(benchlib.latency_from_log(logf))
            bad = res["failed"] + res["errored"] + res["timeout"] + res["status_non2xx"]
            if bad:
                res["error"] = (f"h2load: {res['failed']} failed, {res['errored']} errored, "
                                f"{res['timeout']} timeout, {res['status_non2xx']} non-2xx\n"
                                + out[-1200:])
            elif served < res["succeeded"]:
                # A 200 no backend saw: a proxy-made gRPC error (Trailers-Only).
                res["error"] = (f"{res['succeeded']} requests succeeded for h2load but the "
                                f"backends served only {served}")
        if os.path.exists(logf):
            os.unlink(logf)
        self.check_alive(target)
        self.runs.append(res)
        lat = f"p50 {res.get('p50_us')}us p99 {res.get('p99_us')}us" if "p50_us" in res else ""
        log(f"{kind:6} {target:8} {conns}x{streams} {payload}B: "
            f"{res.get('req_s', 'ERR')} req/s {lat} cpu/10k {res.get('cpu_s_per_10k')} "
            f"backends {per_be}" + (f" ERROR {res['error'][:300]}" if "error" in res else ""))
        return res

    def sweep(self):
        for rep in range(self.args.repeat):
            for payload in self.args.payloads:
                for conns, streams in self.args.conns:
                    for t in self.targets():
                        self.load(t, conns, streams, payload, rep=rep)

    def fixed_rate(self):
        """Latency at equal offered load: 50% of nghttpx's closed-loop max at the
        same connections x streams with the smallest payload (of the fastest
        other proxy when nghttpx is absent)."""
        payload = min(self.args.payloads)
        out = []
        for conns, streams in self.args.rate_conns:
            ref = self.closed_max(conns, streams, payload)
            if not ref:
                self.notes.append(f"fixed rate {conns}x{streams}: no reference req/s, skipped")
                continue
            ref_target, ref_rps = ref
            total = 0.5 * ref_rps
            per_conn = round(total / conns, 2)
            for rep in range(self.args.rate_repeat):
                for t in self.targets():
                    r = self.load(t, conns, streams, payload, rps=per_conn, kind="rate",
                                  rep=rep)
                    r["offered_rps"] = round(total, 1)
                    r["rate_reference"] = ref_target
            out.append((conns, streams))
        return out

    def closed_max(self, conns, streams, payload):
        agg = report.aggregate(self.runs)

        def best(target):
            v = [r["req_s"] for r in agg if r["kind"] == "closed" and r["target"] == target
                 and r["conns"] == conns and r["streams"] == streams
                 and r["payload"] == payload and "error" not in r]
            return v[0] if v else None
        if best("nghttpx"):
            return "nghttpx", best("nghttpx")
        if (conns, streams) not in self.args.conns:
            # Not in the sweep: measure nghttpx (or h2split) closed-loop here.
            for t in ("nghttpx", "h2split"):
                if t in self.targets():
                    r = self.load(t, conns, streams, payload, kind="closed")
                    if "error" not in r:
                        return t, r["req_s"]
        others = [(best(t), t) for t in PROXIES if best(t)]
        return (max(others)[1], max(others)[0]) if others else None

    def idle(self):
        """RSS per idle downstream connection: hold N handshaken h2 connections
        (each made one call first) and divide the proxy's RSS growth by N."""
        res = {}
        n = self.args.idle_conns
        tool = os.path.join(benchlib.HERE, "idle_conns.py")
        for t in self.targets():
            if t == "direct":
                continue
            host, port = self.urls[t].split("//")[1].split("/")[0].rsplit(":", 1)
            pids = self.tree(t)
            before = benchlib.rss_kib(pids)
            p = subprocess.Popen(self.client.argv([testbed.python(), tool, host, port, str(n)]),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, env=testbed.util.child_env())
            try:
                line = _readline(p, 60 + n / 200)
                ev = json.loads(line) if line.startswith("{") else {"event": "failed",
                                                                   "error": line}
                if ev.get("event") != "ready":
                    res[t] = {"error": ev.get("error", line), "open": ev.get("open")}
                    log(f"idle   {t:8} FAILED after {ev.get('open')} connections: "
                        f"{ev.get('error', line)}")
                    continue
                after = benchlib.rss_kib(self.tree(t))
                res[t] = {"conns": n, "rss_before_kib": before, "rss_after_kib": after,
                          "kib_per_conn": round((after - before) / n, 2)}
                log(f"idle   {t:8} {n} conns: RSS {before} -> {after} KiB, "
                    f"{res[t]['kib_per_conn']} KiB/conn")
            finally:
                try:
                    p.stdin.write("\n")
                    p.stdin.flush()
                except OSError:
                    pass
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
            if "kib_per_conn" in res.get(t, {}):
                res[t]["rss_after_close_kib"] = self.settled_rss(t)
            self.check_alive(t)
        return res

    def new_conns(self):
        """New connections per second: conn_rate in the client pod keeps K
        connections in progress, each preface + SETTINGS + one unary RPC + close,
        against every target in turn (the order rotates round by round), and the
        proxy's CPU per new connection from utime+stime of its process tree.
        Medians over the rounds, per target."""
        a = self.args
        tool = benchlib.bench_bin("conn_rate")
        # The client closes first, so TIME_WAIT piles up on its side: in the
        # client pod's own netns (never the host's), a wide port range and
        # TIME_WAIT reuse for outgoing connects keep ports from running out.
        self.client.run(["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65535",
                         "net.ipv4.tcp_tw_reuse=1"])
        targets = [t for t in self.targets()]
        rounds = {t: [] for t in targets}
        for rnd in range(a.new_conns_rounds):
            order = targets[rnd % len(targets):] + targets[:rnd % len(targets)]
            for t in order:
                r = self.conn_rate_run(tool, t, rnd)
                if r is not None:
                    rounds[t].append(r)
        out = {}
        for t, rs in rounds.items():
            if not rs:
                continue
            med = {k: round(statistics.median(r[k] for r in rs), 2)
                   for k in ("conns_s", "p50_us", "p90_us", "p99_us")}
            cpu = [r["cpu_us_per_conn"] for r in rs if r.get("cpu_us_per_conn") is not None]
            if cpu:
                med["cpu_us_per_conn"] = round(statistics.median(cpu), 2)
                med["cpu_util"] = round(statistics.median(r["cpu_util"] for r in rs
                                                          if "cpu_util" in r), 3)
            med["rounds"] = rs
            out[t] = med
        return out

    def conn_rate_run(self, tool, target, rnd):
        a = self.args
        argv = [tool, "-c", str(a.new_conns_concurrency), "-D", str(a.duration),
                "-w", str(a.warmup), "-b", str(min(a.payloads)), "-t", "5", self.urls[target]]
        self.commands["conn_rate"] = " ".join(argv[:-1]) + " URL"
        if not self.check_alive(target):
            return None
        pids = self.tree(target)
        cpu0, (c0, _) = benchlib.cpu_seconds(pids), self.backend_counts()
        t0 = time.monotonic()
        r = self.client.run(argv, timeout=a.duration + a.warmup + 60, check=False)
        wall = time.monotonic() - t0
        cpu1, (c1, _) = benchlib.cpu_seconds(pids), self.backend_counts()
        try:
            res = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.notes.append(f"new connections, {target}, round {rnd}: conn_rate said "
                              f"{(r.stdout + r.stderr)[-300:]!r}")
            return None
        served = sum(c1) - sum(c0)
        if target != "direct" and res["all_completed"]:
            res["cpu_s"] = round(cpu1 - cpu0, 3)
            res["cpu_us_per_conn"] = round((cpu1 - cpu0) * 1e6 / res["all_completed"], 2)
            res["cpu_util"] = round((cpu1 - cpu0) / wall, 3)  # < 1: the proxy had CPU to spare
        res["backend_requests"] = served
        if res["failed"]:
            self.notes.append(f"new connections, {target}, round {rnd}: {res['failed']} "
                              f"failed {res['failed_by']}")
        elif served < res["all_completed"]:
            self.notes.append(f"new connections, {target}, round {rnd}: {res['all_completed']} "
                              f"RPCs succeeded but the backends served {served}")
        log(f"newconn {target:8} round {rnd}: {res['conns_s']} conns/s p50 {res['p50_us']}us "
            f"p99 {res['p99_us']}us cpu/conn {res.get('cpu_us_per_conn')}us "
            f"failed {res['failed']}")
        self.check_alive(target)
        return res

    def backend_delay(self, us):
        urls = [f"http://{p.ip4}:{GRPC_PORT}/control?delay_us={us}" for p in self.be]
        r = self.node.run(["curl", "-s", "--http2-prior-knowledge", "--max-time", "5", *urls])
        if r.stdout.count(f"delay_us {us} ") != len(self.be):
            raise RuntimeError(f"backend /control?delay_us={us}: {r.stdout!r}")

    def inflight(self):
        """RSS per stream in flight: the backends hold every answer
        INFLIGHT_DELAY_S, h2load opens C x S 10 B requests at once through each
        proxy; once the backends have taken in all C*S (every one is then open in
        the proxy, both legs), the proxy's RSS growth / C*S. Then every request
        must succeed."""
        conns, streams = self.args.inflight
        total = conns * streams
        res = {}
        if not total:
            return res
        payload = min(self.args.payloads)
        for t in self.targets():
            if t == "direct" or not self.check_alive(t):
                continue
            res[t] = r = {"conns": conns, "streams": streams, "total": total,
                          "payload": payload, "delay_s": INFLIGHT_DELAY_S}
            argv = ["h2load", "-n", str(total), "-c", str(conns), "-m", str(streams), "-t", "1",
                    "-d", self.bodies[payload], "-H", "content-type: application/grpc",
                    "-H", "te: trailers", self.urls[t]]
            self.backend_delay(int(INFLIGHT_DELAY_S * 1e6))
            c0 = self.backend_arrived()
            before = benchlib.rss_kib(self.tree(t))
            t0 = time.monotonic()
            p = subprocess.Popen(self.client.argv(argv), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True,
                                 env=testbed.util.child_env())

            def all_open():
                if p.poll() is not None:
                    raise testbed.StopWaiting("h2load exited early")
                return self.backend_arrived() - c0 >= total
            try:
                testbed.wait_for(all_open, INFLIGHT_DELAY_S * 0.8,
                                 f"{total} requests held at the backends through {t}")
                at = benchlib.rss_kib(self.tree(t))
                r.update(rss_before_kib=before, rss_inflight_kib=at,
                         seconds_to_open=round(time.monotonic() - t0, 2),
                         kib_per_stream=round((at - before) / total, 2))
            except (TimeoutError, testbed.StopWaiting) as e:
                r["error"] = f"{e}; the backends took in {self.backend_arrived() - c0}"
            finally:
                self.backend_delay(0)
                try:
                    out, _ = p.communicate(timeout=INFLIGHT_DELAY_S + 60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    out, _ = p.communicate(timeout=5)
            try:
                h = benchlib.parse_h2load(out)
                r["succeeded"] = h["succeeded"]
                if h["succeeded"] != total and "error" not in r:
                    r["error"] = f"h2load: {h['succeeded']} of {total} succeeded\n{out[-600:]}"
            except ValueError as e:
                r.setdefault("error", str(e)[-600:])
            if "error" in r:
                self.notes.append(f"in flight, {t} {conns}x{streams}: {r['error'][:400]}")
            log(f"inflight {t:8} {conns}x{streams}: " + (
                f"RSS {before} -> {r['rss_inflight_kib']} KiB, {r['kib_per_stream']} KiB/stream"
                if "kib_per_stream" in r else "") + (f" ERROR {r['error'][:300]}"
                                                     if "error" in r else ""))
            self.check_alive(t)
        return res

    def settled_rss(self, target, still=6.0, timeout=15.0):
        """RSS once it has not moved for ``still`` seconds (longer than h2splitd's
        5 s sweep, which hands freed heap back), at most ``timeout``."""
        last, since, deadline = None, time.monotonic(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = benchlib.rss_kib(self.tree(target))
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= still:
                break
            time.sleep(0.3)
        return last


def _readline(p, timeout):
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        p.kill()
        return "timed out"
    return p.stdout.readline().strip() or f"exited {p.wait(5)}"


def keep_logs(bench, dest):
    """Copy every target's log out of the bed (teardown deletes it); count
    h2splitd's warn/error lines by message, for the report."""
    os.makedirs(dest, exist_ok=True)
    counts = {}
    for t, p in bench.procs.items():
        try:
            shutil.copy(p.log_path, os.path.join(dest, f"{t}.log"))
        except OSError:
            continue
    path = os.path.join(dest, "h2split.log")
    if os.path.exists(path):
        with open(path, errors="replace") as f:
            for line in f:
                m = re.search(r"level=(warn|error)\S* .*?msg=(\S+)", line)
                if m:
                    k = f"{m.group(1)} {m.group(2)}"
                    counts[k] = counts.get(k, 0) + 1
    return {"path": path, "warn_error_lines": counts}


def run(args):
    benchlib.raise_fd_limit()
    started = time.time()
    results = {"mode": "smoke" if args.smoke else "full", "started": time.strftime(
        "%Y-%m-%d %H:%M:%S %Z", time.localtime(started)), "machine": benchlib.machine(),
        "versions": benchlib.versions(os.path.join(benchlib.build_dir(), "h2splitd")),
        "params": {k: getattr(args, k) for k in (
            "workers", "backend_threads", "lb_policy", "duration", "warmup", "repeat",
            "rate_repeat", "conns",
            "payloads", "rate_conns", "idle_conns", "inflight", "connect_count",
            "connect_rounds", "calls_rounds", "new_conns_rounds", "new_conns_concurrency")}}
    with testbed.Node(prefix=args.prefix) as node:
        b = Bench(node, args)
        cc = None
        if not args.skip_connect and not args.new_conns_only:
            cc = connect_cost.ConnectCost(node)
            log(f"connect cost: no programs attached, {args.connect_count} connects")
            cc.before_daemon(args.connect_count, args.connect_rounds)
        b.backends()
        log("starting h2splitd and peers")
        try:
            b.start_h2splitd()
        except (TimeoutError, testbed.StopWaiting, RuntimeError) as e:
            b.notes.append(f"h2split: did not come up: {e}")
            b.dead.add("h2split")
            b.urls.pop("h2split", None)
        b.start_peers()
        if cc:
            log(f"connect cost: {args.connect_rounds} rounds of detached/passed/redirected")
            check = cc.with_daemon(args.connect_count, args.connect_rounds)
            results["connect"] = cc.summary()
            results["connect_check"] = check
            if check["redirected_counter"] != check["expected"]:
                b.notes.append(f"connect cost: h2splitd's BPF counter saw "
                               f"{check['redirected_counter']} redirects, the redirected "
                               f"case made {check['expected']} connects")
        if not args.new_conns_only:
            results["idle"] = b.idle()
            if all(args.inflight):
                log("restarting every proxy for the in-flight test")
                b.restart_all()
                results["inflight"] = b.inflight()
            log("restarting every proxy for the load sweep")
            b.restart_all()
            results["rss_at_sweep_start_kib"] = {t: benchlib.rss_kib(b.tree(t))
                                                 for t in b.procs}
            sampler = benchlib.RssSampler({t: b.procs[t].pid for t in b.procs}).start()
            b.sweep()
            results["rate_configs"] = b.fixed_rate()
            results["peak_rss_kib"] = sampler.stop()
        if args.new_conns_rounds:
            log(f"new connections: {args.new_conns_rounds} interleaved rounds")
            results["new_conns"] = b.new_conns()
        if args.calls_rounds and "h2split" in b.procs and not args.new_conns_only:
            log(f"calls cost: {args.calls_rounds} rounds of the series on and off")
            results["calls_cost"] = b.calls_cost(args.calls_rounds)
        results["runs"] = b.runs
        results["commands"] = b.commands
        results["notes"] = b.notes
        results["urls"] = b.urls
        results["log_tails"] = {t: p.log_tail(40) for t, p in b.procs.items()}
        results["daemon_log"] = keep_logs(b, os.path.join(
            os.path.dirname(os.path.abspath(args.json)), "logs"))
    results["machine"]["loadavg_end"] = benchlib.loadavg()
    results["elapsed_s"] = round(time.time() - started, 1)
    results["hot_path"] = report.load_hot_path(benchlib.build_dir())
    results["summary"] = report.summarize(results)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    log(f"results: {args.json}")
    if args.docs:
        md = report.write_docs(results, args.docs)
        log(f"wrote {md}")
    return results


def main(argv=None):
    args = parse_args(argv)
    res = run(args)
    print(json.dumps(res["summary"], indent=1))


if __name__ == "__main__":
    main()
