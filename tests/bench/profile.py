# SPDX-License-Identifier: Apache-2.0
"""Hot path profile of h2splitd: one fixed h2load workload through the
simulated node, counted two ways. ``make profile`` runs it.

  profile.py [--requests 20000] [--conns 4] [--streams 16] [--payload 10]
             [--large-payload 65536] [--no-peer]
             [--daemon PATH] [--daemon-arg ARG]... [--json FILE] [--prefix h2sprof]
  profile.py --new-conns 5000 [--conns 16] ...

--new-conns N profiles the new-connection path instead: conn_rate (tests/
bench/conn_rate.c) opens N connections, --conns at a time, each preface +
SETTINGS + one unary RPC + close; every figure is then per new connection
(results default BUILD/bench/profile-newconn.json).

Same topology as h2bench.py (three grpc_backend pods behind a Service, h2load
in a client pod, connect4 redirecting to h2splitd, one worker). Figures:
  syscalls/request   strace -c on every thread of a plain h2splitd, attached
                     for exactly the measured h2load run, by syscall; once
                     for the workload, once for a tenth of it at 1x1 (no
                     batching across requests: the per-request floor);
  instructions/request and mallocs/stream   the same run under
                     valgrind --tool=callgrind, instrumented only while h2load
                     runs: total Ir, and the calls into malloc/calloc/realloc
                     made from outside the allocator, divided by requests
                     (every request is one downstream and one upstream stream);
  top functions      by exclusive Ir (callgrind_annotate).
  by library         the same Ir split by the object it ran in (h2splitd,
                     libnghttp2, libc...): what a proxy built on nghttp2 pays
                     in nghttp2 whatever it does itself;
  nghttpx            the same callgrind count for nghttpx (its worker process)
                     on the same workload, split the same way (--no-peer: not);
  large payload      instructions (h2splitd and nghttpx) and syscalls again with
                     a --large-payload message, a fifth of the requests: what
                     copying bodies costs (0: skipped).
Counts, not timings: they hardly move with the load on the box.
"""

import argparse
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402
import peers  # noqa: E402
from benchlib import log, testbed  # noqa: E402

GRPC_PORT = 50051
PATH = "/bench.Echo/Unary"
ALLOCATORS = ("malloc", "calloc", "realloc")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--payload", type=int, default=10)
    ap.add_argument("--prefix", default=os.environ.get("H2S_TESTBED_PREFIX", "h2sprof"))
    ap.add_argument("--daemon", help="h2splitd binary (default BUILD/h2splitd)")
    ap.add_argument("--daemon-arg", action="append", default=[], metavar="ARG",
                    help="extra h2splitd argument, e.g. --daemon-arg=--lb-policy "
                    "--daemon-arg=least_request (repeat it)")
    ap.add_argument("--new-conns", type=int, metavar="N",
                    help="profile N new connections (one RPC each) instead of requests")
    ap.add_argument("--skip-callgrind", action="store_true")
    ap.add_argument("--skip-strace", action="store_true")
    ap.add_argument("--no-peer", action="store_true",
                    help="do not count nghttpx's instructions on the same workload")
    ap.add_argument("--large-payload", type=int, default=65536)
    ap.add_argument("--json", help="results (default BUILD/bench/profile.json)")
    a = ap.parse_args(argv)
    if a.new_conns:
        a.requests = a.new_conns  # one RPC per connection: per request = per connection
    if a.json is None:
        a.json = os.path.join(benchlib.build_dir(), "bench",
                              "profile-newconn.json" if a.new_conns else "profile.json")
    if a.new_conns:
        a.large_payload = 0  # per new connection: the 10 B call only
    a.peer = [] if a.no_peer or not benchlib.have("nghttpx") else ["nghttpx"]
    return a


class Profile:
    def __init__(self, node, args):
        self.node, self.args = node, args
        self.build = benchlib.build_dir()
        self.work = os.path.join(node.workdir, "profile")
        os.makedirs(self.work, exist_ok=True)
        self.body = benchlib.grpc_message(os.path.join(self.work, "msg.bin"), args.payload)
        argv = [benchlib.bench_bin("grpc_backend"), "--port", str(GRPC_PORT)]
        self.be = [node.add_pod(f"be-{i}") for i in range(3)]
        for p in [b.popen(argv, name="grpc-backend", watch=True) for b in self.be]:
            p.wait_line("^ready", 15)
        self.client = node.add_pod("load")
        self.svc = node.add_service("bench", GRPC_PORT, pods=self.be)
        self.url = f"http://{self.svc.vip4}:{GRPC_PORT}{PATH}"

    def daemon_argv(self):
        return [self.args.daemon or os.path.join(self.build, "h2splitd"), *self.node.daemon_args(), "--listen",
                "169.254.20.11:15001", "--workers", "1", "--log-level", "info",
                "--drain-timeout", "2", *self.args.daemon_arg]

    def start(self, wrapper=(), timeout=20):
        p = self.node.popen(list(wrapper) + self.daemon_argv(), name="h2splitd")
        benchlib.wait_log(p, r"msg=redirecting", timeout)
        testbed.wait_for(lambda: self.h2load(50, 1, 1)["succeeded"] == 50, timeout,
                         "calls through h2splitd to succeed")
        return p

    def h2load(self, n, conns, streams):
        if self.args.new_conns:
            return self.conn_rate(n, conns)
        argv = ["h2load", "-n", str(n), "-c", str(conns), "-m", str(streams),
                "-d", self.body, "-H", "content-type: application/grpc",
                "-H", "te: trailers", self.url]
        r = self.client.run(argv, timeout=600, check=False)
        res = benchlib.parse_h2load(r.stdout + r.stderr)
        return res

    def conn_rate(self, n, conns):
        """|n| new connections, |conns| at a time, one RPC each; the result in
        h2load's terms (succeeded), so the rest of the profile reads it alike."""
        argv = [benchlib.bench_bin("conn_rate"), "-n", str(n), "-c", str(conns), "-D", "600",
                "-b", str(self.args.payload), self.url]
        r = self.client.run(argv, timeout=660, check=False)
        try:
            res = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RuntimeError(f"conn_rate: {(r.stdout + r.stderr)[-500:]}")
        res["succeeded"] = res["all_completed"]
        return res

    def workload(self, n=None, conns=None, streams=None):
        a = self.args
        n = n or a.requests
        res = self.h2load(n, conns or a.conns, streams or a.streams)
        if res["succeeded"] != n:
            raise RuntimeError(f"h2load: {res['succeeded']} of {n} succeeded: {res}")
        return res

    # ---- syscalls ------------------------------------------------------------

    def syscalls(self, n, conns, streams):
        p = self.start()
        self.h2load(2000, self.args.conns, self.args.streams)  # warm: pools, blocks
        out = os.path.join(self.work, "strace.txt")
        # -f with -p attaches every thread of the process.
        st = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(p.pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = st.stderr.readline()  # "Process N attached [with M threads]"
        if "attached" not in line:
            raise RuntimeError(f"strace did not attach: {line}{st.stderr.read()}")
        self.workload(n, conns, streams)
        st.send_signal(signal.SIGINT)
        st.wait(timeout=30)
        rss = benchlib.rss_kib([p.pid])
        p.stop(timeout=10)
        calls = parse_strace(out)
        return {"workload": f"{n} requests, {conns}x{streams}","total": sum(calls.values()),
                "per_request": round(sum(calls.values()) / n, 3),
                "by_syscall_per_request": {k: round(v / n, 4) for k, v in
                                           sorted(calls.items(), key=lambda kv: -kv[1])},
                "rss_kib_after": rss}

    # ---- instructions and allocations ----------------------------------------

    def callgrind(self, n=None):
        out = os.path.join(self.work, "callgrind.out")
        for f in glob.glob(out + "*"):
            os.unlink(f)
        vg = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
              f"--callgrind-out-file={out}"]
        p = self.start(vg, timeout=180)
        n = n or self.args.requests
        self.h2load(500, self.args.conns, self.args.streams)
        ctl(["-i", "on"], p.pid)
        self.workload(n)
        ctl(["-i", "off"], p.pid)
        ctl(["-d"], p.pid)
        dumps = sorted(glob.glob(out + ".*"))
        p.stop(timeout=60)
        if not dumps:
            raise RuntimeError("callgrind wrote no dump")
        keep = os.path.join(os.path.dirname(os.path.abspath(self.args.json)),
                            "callgrind.out")
        shutil.copy(dumps[-1], keep)  # the bed's directory goes at teardown
        return summarize_dump(keep, n)

    def callgrind_peer(self, name, n=None):
        """nghttpx under callgrind: its master forks one worker, which is the
        process counted (toggled on for exactly the measured run)."""
        peer = peers.Nghttpx(self.work, 1, [(b.ip4, GRPC_PORT) for b in self.be])
        out = os.path.join(self.work, f"callgrind-{name}.out")
        vg = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=yes",
              f"--callgrind-out-file={out}.%p"]
        p = self.node.popen(vg + peer.argv(), name=name)
        url, self.url = self.url, peer.url_base + PATH
        try:
            testbed.wait_for(lambda: self.h2load(50, 1, 1)["succeeded"] == 50, 180,
                             f"calls through {name} to succeed")
            self.h2load(500, self.args.conns, self.args.streams)
            pids = [q for q in benchlib.tree(p.pid) if q != p.pid]
            if not pids:
                raise RuntimeError(f"{name}: no worker process under {p.pid}")
            n = n or self.args.requests
            for q in pids:
                ctl(["-i", "on"], q)
            self.workload(n)
            for q in pids:
                ctl(["-i", "off"], q)
                ctl(["-d"], q)
        finally:
            self.url = url
        dumps = [d for q in pids for d in sorted(glob.glob(f"{out}.{q}.*"))]
        p.stop(timeout=60)
        if not dumps:
            raise RuntimeError(f"callgrind wrote no dump for {name}")
        keep = os.path.join(os.path.dirname(os.path.abspath(self.args.json)),
                            f"callgrind-{name}.out")
        shutil.copy(dumps[-1], keep)
        return summarize_dump(keep, n)


def summarize_dump(path, n):
    c = parse_callgrind(path)
    top = subprocess.run(["callgrind_annotate", "--threshold=90", path],
                         capture_output=True, text=True, timeout=120).stdout
    return {"ir_total": c["ir"], "ir_per_request": round(c["ir"] / n),
            "ir_per_request_by_object": {k: round(v / n) for k, v in by_object(path).items()},
            "alloc_calls": c["allocs"],
            "mallocs_per_stream": round(sum(c["allocs"].values()) / n, 3),
            "alloc_callers": c["callers"][:25],
            "top_functions": top_functions(top, 25), "dump": path}


def by_object(path):
    """Exclusive Ir summed by the object file it ran in, biggest first."""
    text = subprocess.run(["callgrind_annotate", "--threshold=100", path],
                          capture_output=True, text=True, timeout=120).stdout
    out = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+\S.*\[([^\]]+)\]\s*$", line)
        if m and "PROGRAM TOTALS" not in line:
            obj = os.path.basename(m.group(2))
            out[obj] = out.get(obj, 0) + int(m.group(1).replace(",", ""))
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def ctl(args, pid):
    r = subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, text=True,
                       timeout=60)
    if r.returncode:
        raise RuntimeError(f"callgrind_control {args}: {r.stdout}{r.stderr}")


def parse_strace(path):
    calls = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(parts) >= 5 and re.match(r"^[\d.]+$", parts[0]) and parts[-1] != "total":
                calls[parts[-1]] = int(parts[3])
    return calls


def parse_callgrind(path):
    """Total Ir, and calls into the allocators by caller (name compression aware)."""
    names, allocs, callers = {}, {k: 0 for k in ALLOCATORS}, {}
    fn = cfn = None
    ir = 0

    def name(v):
        m = re.match(r"\((\d+)\)(?: (.*))?", v)
        if not m:
            return v
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), "?")
    with open(path) as f:
        for line in f:
            if line.startswith("fn="):
                fn = name(line[3:].strip())
            elif line.startswith("cfn="):
                cfn = name(line[4:].strip())
            elif line.startswith("calls="):
                n = int(line[6:].split()[0])
                if cfn in ALLOCATORS and fn not in ALLOCATORS:
                    allocs[cfn] += n
                    callers[fn] = callers.get(fn, 0) + n
            elif line.startswith(("summary:", "totals:")):
                ir = max(ir, int(line.split()[1]))
    return {"ir": ir, "allocs": allocs,
            "callers": sorted(callers.items(), key=lambda kv: -kv[1])}


def top_functions(text, n):
    out = []
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+) \(\s*([\d.]+)%\)\s+(\S.*)$", line)
        if m and "PROGRAM TOTALS" not in line:
            out.append({"ir": int(m.group(1).replace(",", "")), "pct": float(m.group(2)),
                        "fn": m.group(3).split(" [")[0]})
    return out[:n]


def report(res):
    a = res["params"]
    lines = [f"workload: h2load -n {a['requests']} -c {a['conns']} -m {a['streams']}, "
             f"{a['payload']}-byte gRPC message, 1 worker"]
    if a.get("new_conns"):
        lines = [f"workload: conn_rate -n {a['new_conns']} -c {a['conns']}, one "
                 f"{a['payload']}-byte gRPC call per new connection, 1 worker; "
                 "every 'request' figure below is per new connection"]
    for k in ("syscalls", "syscalls_1x1"):
        if k not in res:
            continue
        s = res[k]
        lines.append(f"syscalls/request ({s['workload']}): {s['per_request']}  ("
                     + ", ".join(f"{k} {v}" for k, v in
                                 list(s["by_syscall_per_request"].items())[:8]) + ")")
    for k, c in res.items():
        if k.startswith("callgrind_"):
            lines.append(f"{k[len('callgrind_'):]} instructions/request: {c['ir_per_request']}  ("
                         + ", ".join(f"{o} {v}" for o, v in
                                     list(c["ir_per_request_by_object"].items())[:5]) + ")")
    if "callgrind" in res:
        c = res["callgrind"]
        lines.append(f"instructions/request: {c['ir_per_request']}  ("
                     + ", ".join(f"{o} {v}" for o, v in
                                 list(c["ir_per_request_by_object"].items())[:5]) + ")")
        lines.append(f"mallocs/stream: {c['mallocs_per_stream']}  ({c['alloc_calls']})")
        lines.append("allocating callers: " + ", ".join(
            f"{fn} {round(k / a['requests'], 2)}" for fn, k in c["alloc_callers"][:12]))
        lines.append("top functions (exclusive Ir):")
        for t in c["top_functions"][:15]:
            lines.append(f"  {t['pct']:5.2f}%  {t['fn']}")
    big = res.get("large") or {}
    if big:
        lines.append(f"{big['payload']}-byte message, {big['requests']} requests:")
        if "syscalls" in big:
            lines.append(f"  syscalls/request: {big['syscalls']['per_request']}")
        for k, c in big.items():
            if k.startswith("callgrind"):
                who = k[len("callgrind_"):] or "h2splitd"
                lines.append(f"  {who} instructions/request: {c['ir_per_request']}  ("
                             + ", ".join(f"{o} {v}" for o, v in
                                         list(c["ir_per_request_by_object"].items())[:4])
                             + ")")
    return "\n".join(lines)


def main(argv=None):
    a = parse_args(argv)
    benchlib.raise_fd_limit()
    res = {"params": {k: getattr(a, k) for k in ("requests", "conns", "streams", "payload",
                                                 "new_conns")},
           "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "git": benchlib.versions()["git"]}
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with testbed.Node(prefix=a.prefix) as node:
        prof = Profile(node, a)
        if not a.skip_strace:
            log("syscalls: strace -c on a plain h2splitd")
            res["syscalls"] = prof.syscalls(a.requests, a.conns, a.streams)
            if not a.new_conns:
                res["syscalls_1x1"] = prof.syscalls(a.requests // 10, 1, 1)
        if not a.skip_callgrind:
            log("instructions and allocations: callgrind")
            res["callgrind"] = prof.callgrind()
            for peer in a.peer:
                log(f"instructions and allocations: callgrind on {peer}")
                res[f"callgrind_{peer}"] = prof.callgrind_peer(peer)
        if a.large_payload:
            n = max(a.requests // 5, 500)
            log(f"the same with a {a.large_payload}-byte message, {n} requests")
            prof.body = benchlib.grpc_message(os.path.join(prof.work, "large.bin"),
                                              a.large_payload)
            big = res["large"] = {"payload": a.large_payload, "requests": n}
            if not a.skip_strace:
                big["syscalls"] = prof.syscalls(n, a.conns, a.streams)
            if not a.skip_callgrind:
                big["callgrind"] = prof.callgrind(n)
                for peer in a.peer:
                    big[f"callgrind_{peer}"] = prof.callgrind_peer(peer, n)
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(res, f, indent=1)
    print(report(res))
    log(f"results: {a.json}")


if __name__ == "__main__":
    main()
