# SPDX-License-Identifier: Apache-2.0
"""Capacity of h2splitd: many idle downstream connections and many streams
in flight at once, with the RSS each costs. ``make capacity`` runs it.

  capacity.py [--idle-conns 10000] [--stream-conns 1000] [--streams 100]
              [--delay-ms 30000] [--json FILE] [--prefix h2scap]

Same node as h2bench.py, two Services: "fast" (three grpc_backend pods that
answer at once) and "slow" (three that hold every answer --delay-ms).
  idle     idle_conns.py opens N h2 connections through the redirect to the
           fast Service, each makes one call and stays open; RSS growth / N;
  streams  h2load -c C -m S -n C*S against the slow Service: every request is
           open at once until the backends answer; when h2splitd's
           downstream_streams_active gauge reaches C*S, RSS growth / C*S is
           the cost of a stream in flight (both of its sessions, the bridge,
           the retained request body). Then every request must succeed.
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402
import connect_cost  # noqa: E402
from benchlib import log, testbed  # noqa: E402

GRPC_PORT = 50051
PATH = "/bench.Echo/Unary"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--idle-conns", type=int, default=10000)
    ap.add_argument("--stream-conns", type=int, default=1000)
    ap.add_argument("--streams", type=int, default=100, help="per connection")
    ap.add_argument("--delay-ms", type=int, default=30000)
    ap.add_argument("--load-procs", type=int, default=4,
                    help="h2load processes sharing the connections (one thread each)")
    ap.add_argument("--prefix", default=os.environ.get("H2S_TESTBED_PREFIX", "h2scap"))
    ap.add_argument("--json", help="results (default BUILD/bench/capacity.json)")
    a = ap.parse_args(argv)
    if a.json is None:
        a.json = os.path.join(benchlib.build_dir(), "bench", "capacity.json")
    return a


class Capacity:
    def __init__(self, node, args):
        self.node, self.args = node, args
        self.build = benchlib.build_dir()
        self.work = os.path.join(node.workdir, "capacity")
        os.makedirs(self.work, exist_ok=True)
        self.body = benchlib.grpc_message(os.path.join(self.work, "msg.bin"), 10)
        be = benchlib.bench_bin("grpc_backend")
        fast = [node.add_pod(f"fast-{i}") for i in range(3)]
        slow = [node.add_pod(f"slow-{i}") for i in range(3)]
        procs = [p.popen([be, "--port", str(GRPC_PORT)], name="grpc-backend", watch=True)
                 for p in fast]
        procs += [p.popen([be, "--port", str(GRPC_PORT), "--delay-us", str(args.delay_ms * 1000)],
                          name="grpc-backend", watch=True) for p in slow]
        for p in procs:
            p.wait_line("^ready", 15)
        self.client = node.add_pod("load")
        self.fast = node.add_service("fast", GRPC_PORT, pods=fast)
        self.slow = node.add_service("slow", GRPC_PORT, pods=slow)
        self.daemon = None

    def start_daemon(self):
        if self.daemon:
            self.daemon.stop(timeout=15)
        self.daemon = connect_cost.start_h2splitd(self.node, self.build)
        url = f"http://{self.fast.vip4}:{GRPC_PORT}{PATH}"
        testbed.wait_for(lambda: self.client.run(
            ["curl", "-s", "--http2-prior-knowledge", "--max-time", "2", "-o", "/dev/null",
             "-w", "%{http_code}", "-X", "POST", "-H", "content-type: application/grpc",
             "--data-binary", "@" + self.body, url], check=False).stdout == "200", 20,
            "a call through h2splitd")
        with open(self.daemon.log_path, errors="replace") as f:
            lim = [line.strip() for line in f if "msg=fd_limit" in line]
        return lim[-1] if lim else None

    def rss(self):
        return benchlib.rss_kib([self.daemon.pid])

    def gauge(self, name):
        r = self.node.run(["curl", "-s", "--max-time", "5", "http://127.0.0.1:9901/metrics"],
                          check=False)
        for line in r.stdout.splitlines():
            if line.startswith(f"h2split_{name} "):
                return int(line.split()[1])
        log(f"no h2split_{name} in /metrics: {r.returncode} {r.stdout[-300:]!r} {r.stderr!r}")
        return None

    def idle(self):
        n = self.args.idle_conns
        fd_limit = self.start_daemon()
        before = self.rss()
        tool = os.path.join(benchlib.HERE, "idle_conns.py")
        p = subprocess.Popen(self.client.argv([testbed.python(), tool, self.fast.vip4,
                                               str(GRPC_PORT), str(n)]),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=testbed.util.child_env())
        res = {"conns": n, "fd_limit_log": fd_limit, "rss_before_kib": before}
        try:
            line = p.stdout.readline().strip()
            ev = json.loads(line) if line.startswith("{") else {"event": "failed",
                                                               "error": line}
            res["open"] = ev.get("open")
            if ev.get("event") != "ready":
                res["error"] = ev.get("error", line)
                return res
            res["seconds_to_open"] = ev.get("seconds")
            res["rss_after_kib"] = self.rss()
            res["active_gauge"] = self.gauge("downstream_connections_active")
            res["kib_per_conn"] = round((res["rss_after_kib"] - before) / n, 2)
            res["fds"] = len(os.listdir(f"/proc/{self.daemon.pid}/fd"))
        finally:
            try:
                p.stdin.write("\n")
                p.stdin.flush()
            except OSError:
                pass
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        return res

    def streams(self):
        a = self.args
        total = a.stream_conns * a.streams
        self.start_daemon()
        before = self.rss()
        url = f"http://{self.slow.vip4}:{GRPC_PORT}{PATH}"
        per = a.stream_conns // a.load_procs
        argv = ["h2load", "-n", str(per * a.streams), "-c", str(per), "-m", str(a.streams),
                "-t", "1", "-d", self.body, "-H", "content-type: application/grpc",
                "-H", "te: trailers", url]
        outs = [os.path.join(self.work, f"h2load-{i}.out") for i in range(a.load_procs)]
        t0 = time.monotonic()
        loads = []
        for out in outs:
            with open(out, "w") as f:
                loads.append(subprocess.Popen(self.client.argv(argv), stdout=f,
                                              stderr=subprocess.STDOUT,
                                              env=testbed.util.child_env()))
        res = {"conns": a.stream_conns, "streams_per_conn": a.streams, "total": total,
               "delay_ms": a.delay_ms, "rss_before_kib": before}
        peak = {"active": 0}

        def all_open():
            if any(p.poll() is not None for p in loads):
                raise testbed.StopWaiting("an h2load exited early")
            v = self.gauge("downstream_streams_active") or 0
            log(f"streams active {v} ds conns {self.gauge('downstream_connections_active')} "
                f"l4 {self.gauge('l4_connections_active')} rss {self.rss()}")
            if v >= peak["active"]:
                peak.update(active=v, rss=self.rss(), t=round(time.monotonic() - t0, 2))
            return v >= total
        try:
            testbed.wait_for(all_open, a.delay_ms / 1000, f"{total} streams open at once")
        except (TimeoutError, testbed.StopWaiting) as e:
            res["error"] = str(e)
        res["peak_active"] = peak["active"]
        res["seconds_to_peak"] = peak.get("t")
        res["rss_at_peak_kib"] = peak.get("rss")
        if peak["active"]:
            res["kib_per_stream"] = round((peak["rss"] - before) / peak["active"], 2)
        res["fds_at_peak"] = len(os.listdir(f"/proc/{self.daemon.pid}/fd"))
        res["l4_conns"] = self.gauge("l4_connections_total")
        res["h2_conns"] = self.gauge("downstream_h2_connections_total")
        h = {"succeeded": 0, "failed": 0, "errored": 0, "status_non2xx": 0}
        for p, out in zip(loads, outs):
            try:
                p.wait(timeout=a.delay_ms / 1000 + 120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            with open(out) as f:
                text = f.read()
            try:
                one = benchlib.parse_h2load(text)
            except ValueError as e:
                res.setdefault("error", str(e)[-600:])
                continue
            for k in h:
                h[k] += one[k]
        res.update(h)
        if h["succeeded"] != total and "error" not in res:
            res["error"] = f"h2load: {h['succeeded']} of {total} succeeded"
        return res


def main(argv=None):
    a = parse_args(argv)
    benchlib.raise_fd_limit()
    res = {"params": vars(a), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "git": benchlib.versions()["git"], "fd_hard_limit": benchlib.raise_fd_limit()}
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with testbed.Node(prefix=a.prefix) as node:
        cap = Capacity(node, a)
        if a.idle_conns:
            log(f"idle: {a.idle_conns} downstream connections")
            res["idle"] = cap.idle()
            log(f"idle: {res['idle']}")
        if a.stream_conns and a.streams:
            log(f"streams: {a.stream_conns} x {a.streams} in flight")
            res["streams"] = cap.streams()
            log(f"streams: {res['streams']}")
    with open(a.json, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: res.get(k) for k in ("idle", "streams")}, indent=1))
    ok = all("error" not in res.get(k, {}) for k in ("idle", "streams"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
