# SPDX-License-Identifier: Apache-2.0
"""h2split's balance benchmark: how round_robin, least_request and ewma
treat backends that misbehave. ``make bench-balance`` runs it and rewrites
docs/balancing.md and its charts.

  balance.py [--smoke] [--rate 1000] [--duration 6] [--repeat 3] [--scenarios equal,slow,...]
             [--policies round_robin,least_request,ewma] [--variant LABEL=POLICY[,ARG...]]
             [--daemon-arg ARG]... [--annotation KEY=VALUE]... [--docs DIR] [--json FILE]

One simulated node (tests/testbed, prefix h2sbal): six backend pods run
grpc_backend (C, nghttp2; answers after --base-delay-us, names its pod in an
x-pod header, behaviour switched at run time over GET /control), five of
them behind the Service "bal"; a client pod runs balance_load, an open-loop
client at a fixed rate whose connects to the ClusterIP h2split's BPF
programs redirect to h2splitd, and which records every RPC's status,
latency (from its scheduled send time) and serving pod. Scenarios (issue 9):
  equal    5 equal pods
  slow     be-4 answers 10x slower
  failing  be-4 fails 50% of RPCs at once with UNAVAILABLE
  added    4 pods; be-5, as fast as they are, joins the Service a third
           of the way in (how soon it gets its share)
  cold     the same, but be-5 is cold: slower for its first seconds (the
           p99 spike slow start is for)
  stall    be-4 is SIGSTOPped a third of the way in (stops reading)
  near_slow  locality (issue 21): the Service prefers this node's zone, where
           be-0 and be-1 run (be-2..be-4 claim another zone); both near pods
           answer 10x slower
  near_dead  the same, the near pods SIGKILLed a third of the way in and
           restarted half way (failover, then failback)
  killed   be-4 is being killed: a third of the way in it answers every RPC
           UNAVAILABLE (shutting down), half way it gets SIGKILL
  killed_retry  the same, with a retry policy on the Service
           (h2split.io/retry-policy: UNAVAILABLE, 3 attempts)
Each scenario runs every policy, one after another (interleaved when
--repeat > 1), each on a freshly started h2splitd.
"""

import argparse
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import balance_report  # noqa: E402
import benchlib  # noqa: E402
import connect_cost  # noqa: E402
from benchlib import log, testbed  # noqa: E402

PREFIX = "h2sbal"
GRPC_PORT = 50051
POLICIES = ("round_robin", "least_request", "ewma")
SCENARIOS = ("equal", "slow", "failing", "added", "cold", "stall", "near_slow", "near_dead",
             "killed", "killed_retry")
KILLED = ("killed", "killed_retry")  # be-4 fails, then dies, under load
RETRY_POLICY = json.dumps({"maxAttempts": 3, "initialBackoff": "0.005s", "maxBackoff": "0.05s",
                           "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]})
JOINS = ("added", "cold")  # scenarios where be-5 joins under load
LOCALITY = ("near_slow", "near_dead")  # the Service prefers this node's zone
NEAR = ["be-0", "be-1"]  # the pods in this node's zone (the others claim zone z2)
ZONE = "z1"
PODS = [f"be-{i}" for i in range(6)]
BAD = "be-4"    # the slow, failing or stalled pod
NEW = "be-5"    # the pod added under load
BUCKET_US = 100_000
HICCUP_US = 50_000  # a bucket's p99 this slow with no failure: the machine, not a pod
ADMIN = "127.0.0.1:9901"  # connect_cost.start_h2splitd: node.daemon_args()' default
COUNTERS = ("h2split_outlier_ejections_total", "h2split_endpoint_retries_total",
            "h2split_service_retries_total", "h2split_service_retry_budget_exhausted_total")

FULL = dict(rate=1000.0, duration=6.0, repeat=3)
SMOKE = dict(rate=300.0, duration=1.5, repeat=1)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="seconds per run, same figures")
    ap.add_argument("--rate", type=float, help="offered RPCs per second (open loop)")
    ap.add_argument("--duration", type=float, help="seconds of load per run")
    ap.add_argument("--repeat", type=int, help="rounds of every scenario x policy")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--variant", action="append", default=[], metavar="LABEL=POLICY[,ARG...]",
                    help="one more contender: LABEL runs --lb-policy POLICY plus these "
                    "h2splitd args, e.g. 'ewma+ss=ewma,--slow-start,5000'")
    ap.add_argument("--daemon-arg", action="append", default=[], metavar="ARG",
                    help="extra h2splitd argument for every run (repeat it)")
    ap.add_argument("--annotation", action="append", default=[], metavar="KEY=VALUE",
                    help="annotation on the Service, e.g. h2split.io/slow-start=5000")
    ap.add_argument("--base-delay-us", type=int, default=1000, help="every backend's latency")
    ap.add_argument("--slow-factor", type=int, default=10, help="scenario slow: be-4's factor")
    ap.add_argument("--fail-pct", type=int, default=50, help="scenario failing: be-4's share")
    ap.add_argument("--cold-ms", type=int, default=3000,
                    help="scenario cold: be-5 is slower for this long after its first RPC")
    ap.add_argument("--cold-factor", type=int, default=5, help="... starting this much slower")
    ap.add_argument("--conns", type=int, default=2, help="client connections")
    ap.add_argument("--deadline-ms", type=int, default=1000, help="client deadline per RPC")
    ap.add_argument("--workers", type=int, default=1, help="h2splitd --workers")
    ap.add_argument("--prefix", default=PREFIX)
    ap.add_argument("--json", help="results (default BUILD/bench/balance[-smoke].json)")
    ap.add_argument("--docs", help="write balancing.md and charts here (default: docs/ for a "
                    "full run, nothing for --smoke)")
    a = ap.parse_args(argv)
    for k, v in (SMOKE if a.smoke else FULL).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.scenarios = [s for s in a.scenarios.split(",") if s]
    bad = [s for s in a.scenarios if s not in SCENARIOS]
    if bad:
        ap.error(f"unknown scenario {bad[0]}: expected {', '.join(SCENARIOS)}")
    a.contenders = [(p, p, []) for p in a.policies.split(",") if p]
    for v in a.variant:
        label, _, rest = v.partition("=")
        parts = rest.split(",")
        if not label or not parts[0]:
            ap.error(f"--variant {v}: expected LABEL=POLICY[,ARG...]")
        a.contenders.append((label, parts[0], parts[1:]))
    a.annotations = {}
    for kv in a.annotation:
        k, sep, v = kv.partition("=")
        if not sep:
            ap.error(f"--annotation {kv}: expected KEY=VALUE")
        a.annotations[k] = v
    if a.docs is None and not a.smoke:
        a.docs = os.path.join(benchlib.REPO_DIR, "docs")
    a.argv = list(sys.argv[1:] if argv is None else argv)
    if a.json is None:
        a.json = os.path.join(benchlib.build_dir(), "bench",
                              "balance-smoke.json" if a.smoke else "balance.json")
    return a


# ---- analysis ------------------------------------------------------------------

def percentile(sorted_vals, q):
    if not sorted_vals:
        return None
    return sorted_vals[min(len(sorted_vals) - 1, int(q / 100 * len(sorted_vals)))]


def read_rpcs(path):
    """balance_load's lines: (start_us, latency_us, status, pod)."""
    out = []
    with open(path) as f:
        for line in f:
            p = line.split()
            if len(p) == 4:
                out.append((int(p[0]), int(p[1]), int(p[2]), p[3]))
    out.sort()
    return out


def latency_summary(rpcs):
    lat = sorted(r[1] for r in rpcs)
    ok = sum(1 for r in rpcs if r[2] == 0)
    return {"n": len(rpcs), "ok": ok, "success": round(ok / len(rpcs), 5) if rpcs else None,
            "p50_us": percentile(lat, 50), "p90_us": percentile(lat, 90),
            "p99_us": percentile(lat, 99), "p999_us": percentile(lat, 99.9),
            "max_us": lat[-1] if lat else None}


def analyze(rpcs, scenario, event_us, pods, args, revive_us=None):
    """Every figure of one run. ``event_us``: when the scenario's event (pod added,
    pod stalled, near pods killed) happened, ``revive_us`` when killed pods were
    back, in the client's clock (us since its start)."""
    r = latency_summary(rpcs)
    statuses = {}
    served = {}
    for _, _, st, pod in rpcs:
        statuses[str(st)] = statuses.get(str(st), 0) + 1
        if pod != "-":
            served[pod] = served.get(pod, 0) + 1
    r["statuses"] = statuses
    r["served"] = served
    total = sum(served.values())
    r["share"] = {p: round(served.get(p, 0) / total, 4) if total else 0 for p in pods}
    shares = list(r["share"].values())
    mean = sum(shares) / len(shares)
    r["spread"] = round((max(shares) - min(shares)) / mean, 4) if mean else None
    # The whole latency curve (for the CDF chart), 1/200 steps plus the tail.
    lat = sorted(x[1] for x in rpcs)
    qs = [i / 2 for i in range(0, 200)] + [99.5, 99.9, 99.99, 100]
    r["curve"] = [[q, percentile(lat, q)] for q in qs] if lat else []
    # Per 100 ms bucket: RPCs served per pod, failures, p99.
    buckets = {}
    for start, l, st, pod in rpcs:
        b = buckets.setdefault(start // BUCKET_US, {"n": 0, "fail": 0, "pods": {}, "lat": []})
        b["n"] += 1
        b["fail"] += st != 0
        b["lat"].append(l)
        if pod != "-":
            b["pods"][pod] = b["pods"].get(pod, 0) + 1
    r["timeline"] = [{"t_s": round(k * BUCKET_US / 1e6, 1), "n": b["n"], "fail": b["fail"],
                      "pods": b["pods"], "p99_us": percentile(sorted(b["lat"]), 99)}
                     for k, b in sorted(buckets.items())]
    # The shared machine's hiccups: buckets where even RPCs that all succeeded
    # were slow. They hit every policy alike; a run with many is less telling.
    r["hiccup_buckets"] = sum(1 for b in r["timeline"]
                              if b["fail"] == 0 and b["p99_us"] >= HICCUP_US)
    if scenario in JOINS:
        r.update(added_figures(rpcs, r["timeline"], event_us, len(pods)))
    if scenario == "stall":
        r.update(stall_figures(rpcs, event_us, args))
    if scenario in LOCALITY:
        r.update(locality_figures(rpcs, r["timeline"], event_us, revive_us))
    if event_us is not None:
        r["event_s"] = round(event_us / 1e6, 3)
    return r


def added_figures(rpcs, timeline, event_us, npods):
    """When the new pod got its first RPC, when its share of a 100 ms bucket
    first reached 80% of a fair share, and its latency in its first 2 s
    against the other pods' in the same 2 s."""
    fair = 1 / npods
    out = {"fair_share": round(fair, 4)}
    first = next((s for s, _, _, pod in rpcs if pod == NEW and s >= event_us), None)
    out["first_rpc_after_s"] = round((first - event_us) / 1e6, 3) if first is not None else None
    reach = None
    for b in timeline:
        t_us = b["t_s"] * 1e6
        if t_us < event_us:
            continue
        served = sum(b["pods"].values())
        if served and b["pods"].get(NEW, 0) / served >= 0.8 * fair:
            reach = (t_us + BUCKET_US - event_us) / 1e6
            break
    out["fair_share_after_s"] = round(reach, 3) if reach is not None else None
    if first is not None:
        win = [x for x in rpcs if first <= x[0] < first + 2_000_000]
        new = sorted(x[1] for x in win if x[3] == NEW)
        old = sorted(x[1] for x in win if x[3] not in (NEW, "-"))
        out["new_first2s_p99_us"] = percentile(new, 99)
        out["new_first2s_p50_us"] = percentile(new, 50)
        out["new_first2s_rpcs"] = len(new)
        out["others_first2s_p99_us"] = percentile(old, 99)
        out["all_first2s_p99_us"] = percentile(sorted(x[1] for x in win), 99)
    after = [x for x in rpcs if x[0] >= event_us]
    out["new_share_after"] = round(sum(1 for x in after if x[3] == NEW) /
                                   max(1, sum(1 for x in after if x[3] != "-")), 4)
    return out


def near_share(rpcs):
    served = [x for x in rpcs if x[3] != "-"]
    return round(sum(1 for x in served if x[3] in NEAR) / len(served), 4) if served else None


def locality_figures(rpcs, timeline, event_us, revive_us):
    """The near pods' share (all of the run, or before / while / after they were
    dead), the RPCs that failed once they were killed, and how soon after their
    restart their share of a 100 ms bucket reached 80%."""
    if event_us is None:
        return {"near_share": near_share(rpcs)}
    before = [x for x in rpcs if x[0] < event_us]
    dead = [x for x in rpcs if event_us <= x[0] < revive_us]
    out = {"near_share": near_share(before), "near_share_dead": near_share(dead),
           "failed_after_kill": sum(1 for x in dead if x[2] != 0),
           "near_share_back": near_share([x for x in rpcs if x[0] >= revive_us])}
    back = None
    for b in timeline:
        t_us = b["t_s"] * 1e6
        served = sum(b["pods"].values())
        if t_us >= revive_us and served and \
                sum(b["pods"].get(p, 0) for p in NEAR) / served >= 0.8:
            back = (t_us + BUCKET_US - revive_us) / 1e6
            break
    out["near_back_after_s"] = round(back, 3) if back is not None else None
    return out


def stall_figures(rpcs, event_us, args):
    """RPCs sent while the pod was stalled: how many failed (the client's
    deadline), how many failed after the first deadline had passed (when a
    balancer could have known), and their latency."""
    during = [x for x in rpcs if x[0] >= event_us]
    late = [x for x in during if x[0] >= event_us + args.deadline_ms * 1000]
    s = latency_summary(during)
    out = {"stalled_rpcs": len(during), "stalled_failed": len(during) - s["ok"],
           "stalled_success": s["success"], "stalled_p50_us": s["p50_us"],
           "stalled_p99_us": s["p99_us"],
           "failed_after_first_deadline": sum(1 for x in late if x[2] != 0),
           "rpcs_after_first_deadline": len(late)}
    last_fail = max((x[0] for x in during if x[2] != 0), default=None)
    out["last_failed_start_s"] = round((last_fail - event_us) / 1e6, 3) \
        if last_fail is not None else None
    return out


# ---- the bed ---------------------------------------------------------------------

class Bench:
    def __init__(self, node, args):
        self.node, self.args = node, args
        self.build = benchlib.build_dir()
        self.backend_bin = benchlib.bench_bin("grpc_backend")
        self.load_bin = benchlib.bench_bin("balance_load")
        self.work = os.path.join(node.workdir, "balance")
        os.makedirs(self.work, exist_ok=True)
        self.daemon = None
        self.commands = {}
        self.notes = []

    def setup(self):
        a = self.args
        self.pods = {n: self.node.add_pod(n) for n in PODS}
        self.backends = {}
        for n in self.pods:
            argv = self.start_backend(n)
        self.commands["backend"] = " ".join(argv).replace(NEW, "<pod>").replace(
            benchlib.REPO_DIR + "/", "")
        for p in self.backends.values():
            p.wait_line("^ready", 15)
        self.client = self.node.add_pod("load")
        # Locality is simulated: the near pods claim another node of this
        # node's zone, the rest another zone. Only the locality scenarios'
        # Service asks for it; the others route exactly as without.
        for n in PODS:
            self.pods[n].node_name = "near-node" if n in NEAR else "far-node"
            self.pods[n].zone = ZONE if n in NEAR else "z2"
        self.node.set_zone(ZONE)
        self.svc = self.node.add_service("bal", GRPC_PORT, pods=PODS[:5],
                                         annotations=a.annotations)

    def control(self, pod, **kv):
        q = "&".join(f"{k}={v}" for k, v in kv.items())
        r = self.node.run(["curl", "-s", "--http2-prior-knowledge", "--max-time", "5",
                           f"http://{self.pods[pod].ip4}:{GRPC_PORT}/control?{q}"])
        if not r.stdout.startswith("delay_us"):
            raise RuntimeError(f"{pod} /control?{q}: {r.stdout!r}")

    def reset(self, scenario):
        """Every backend well behaved; then the scenario's starting state."""
        a = self.args
        for n in PODS:
            self.control(n, delay_us=a.base_delay_us, fail_pct=0, cold_ms=0, cold_factor=1)
        if scenario == "slow":
            self.control(BAD, delay_us=a.base_delay_us * a.slow_factor)
        elif scenario == "failing":
            self.control(BAD, fail_pct=a.fail_pct)
        elif scenario == "cold":
            self.control(NEW, cold_ms=a.cold_ms, cold_factor=a.cold_factor)
        elif scenario == "near_slow":
            for n in NEAR:
                self.control(n, delay_us=a.base_delay_us * a.slow_factor)
        ann = dict(self.args.annotations or {})
        if scenario == "killed_retry":
            ann["h2split.io/retry-policy"] = RETRY_POLICY
        self.node.update_service(self.svc, traffic_distribution="PreferSameZone"
                                 if scenario in LOCALITY else None, annotations=ann)
        pods = PODS[:4] if scenario in JOINS else PODS[:5]
        self.node.set_endpoints(self.svc, pods)
        return pods + ([NEW] if scenario in JOINS else [])

    def start_backend(self, n):
        argv = [self.backend_bin, "--port", str(GRPC_PORT), "--pod", n,
                "--delay-us", str(self.args.base_delay_us)]
        self.backends[n] = self.pods[n].popen(argv, name="grpc-backend", watch=True)
        return argv

    def start_daemon(self, policy, extra):
        argv_extra = ["--node-name", self.node.netns] + list(self.args.daemon_arg) + list(extra)
        self.daemon = connect_cost.start_h2splitd(self.node, self.build, self.args.workers,
                                                  policy, argv_extra)
        self.commands.setdefault("h2splitd", " ".join(
            ["h2splitd", *self.daemon.args[self.daemon.args.index("--discovery"):]]))

    def counters(self):
        """h2splitd's counters of interest (outlier ejections, retries): sums over
        every label set, from its /metrics."""
        r = self.node.run(["curl", "-s", "--max-time", "5", f"http://{ADMIN}/metrics"],
                          check=False)
        out = {k: 0 for k in COUNTERS}
        for line in r.stdout.splitlines():
            name = line.split("{")[0].split(" ")[0]
            if name in out:
                out[name] += int(float(line.rsplit(" ", 1)[1]))
        return out

    def stop_daemon(self):
        if self.daemon is not None:
            self.daemon.stop(timeout=10)
            self.daemon = None

    def event(self, scenario):
        if scenario in JOINS:
            self.node.set_endpoints(self.svc, PODS[:4] + [NEW])
        elif scenario == "stall":
            self.backends[BAD].send_signal(signal.SIGSTOP)
        elif scenario == "near_dead":
            for n in NEAR:
                self.backends[n].send_signal(signal.SIGKILL)
        elif scenario in KILLED:
            self.control(BAD, fail_pct=100)  # shutting down: UNAVAILABLE to all

    def revive(self):
        """The near pods' servers again (near_dead): back once they say ready."""
        for n in NEAR:
            self.backends[n].wait(5)
            self.start_backend(n)
        for n in NEAR:
            self.backends[n].wait_line("^ready", 15)

    def undo(self, scenario):
        if scenario == "stall":
            self.backends[BAD].send_signal(signal.SIGCONT)
        elif scenario == "near_dead" and any(self.backends[n].poll() is not None
                                            for n in NEAR):
            self.revive()
        elif scenario in KILLED and self.backends[BAD].poll() is not None:
            self.start_backend(BAD)
            self.backends[BAD].wait_line("^ready", 15)

    def run_one(self, scenario, label, policy, extra, rep):
        a = self.args
        pods = self.reset(scenario)
        self.start_daemon(policy, extra)
        out = os.path.join(self.work, f"{scenario}-{label}-{rep}.txt")
        argv = [self.load_bin, "--target", f"{self.svc.vip4}:{GRPC_PORT}", "--rate",
                str(a.rate), "--duration", str(a.duration), "--out", out, "--conns",
                str(a.conns), "--deadline-ms", str(a.deadline_ms)]
        self.commands.setdefault("load", " ".join(argv).replace(out, "<file>").replace(
            benchlib.REPO_DIR + "/", ""))
        res = {"scenario": scenario, "policy": label, "lb_policy": policy,
               "daemon_args": list(a.daemon_arg) + list(extra), "rep": rep}
        event_us = revive_us = None
        p = self.client.popen(argv, name="balance-load", watch=True)
        try:
            start_ns = int(p.wait_line(r"^start \d+", 15).split()[1])
            if scenario in JOINS + ("stall", "near_dead") + KILLED:
                at = start_ns + int(a.duration * 1e9 / 3)
                time.sleep(max(0.0, (at - time.monotonic_ns()) / 1e9))  # the scheduled event
                event_us = (time.monotonic_ns() - start_ns) // 1000
                self.event(scenario)
            if scenario == "near_dead":
                at = start_ns + int(a.duration * 1e9 / 2)
                time.sleep(max(0.0, (at - time.monotonic_ns()) / 1e9))  # scheduled, too
                self.revive()
                revive_us = (time.monotonic_ns() - start_ns) // 1000
            if scenario in KILLED:
                at = start_ns + int(a.duration * 1e9 / 2)
                time.sleep(max(0.0, (at - time.monotonic_ns()) / 1e9))  # scheduled, too
                self.backends[BAD].send_signal(signal.SIGKILL)
            done = p.wait_line(r"^done ", a.duration + a.deadline_ms / 1000 + 30)
            if p.wait(10):
                raise testbed.StopWaiting(f"balance_load exited {p.returncode}\n{p.log_tail()}")
            res["load_summary"] = done
        except (TimeoutError, RuntimeError, testbed.StopWaiting) as e:  # RuntimeError: exited
            res["error"] = str(e)[-1500:]
        finally:
            self.undo(scenario)
            if p.poll() is None:
                p.stop()
            alive = self.daemon.poll() is None
            if alive:
                res["daemon_counters"] = self.counters()
            else:
                res["error"] = f"h2splitd exited ({self.daemon.returncode}):\n" \
                    f"{self.daemon.log_tail(15)}"
            self.stop_daemon()
        if "error" not in res:
            res.update(analyze(read_rpcs(out), scenario, event_us, pods, a, revive_us))
            os.unlink(out)
        log(f"{scenario:8} {label:14} " + (
            f"ok {res['success'] * 100:.2f}% p50 {res['p50_us']}us p99 {res['p99_us']}us "
            f"share {[round(res['share'][x] * 100, 1) for x in pods]}"
            if "error" not in res else f"ERROR {res['error'][:300]}"))
        return res


def run(args):
    benchlib.raise_fd_limit()
    started = time.time()
    results = {"mode": "smoke" if args.smoke else "full",
               "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
               "machine": benchlib.machine(),
               "versions": benchlib.versions(os.path.join(benchlib.build_dir(), "h2splitd")),
               "params": {k: getattr(args, k) for k in (
                   "rate", "duration", "repeat", "scenarios", "base_delay_us", "slow_factor",
                   "fail_pct", "cold_ms", "cold_factor", "conns", "deadline_ms", "workers",
                   "daemon_arg", "annotations")},
               "argv": args.argv,
               "contenders": [{"label": c[0], "policy": c[1], "args": c[2]}
                              for c in args.contenders],
               "runs": []}
    with testbed.Node(prefix=args.prefix) as node:
        b = Bench(node, args)
        b.setup()
        for scenario in args.scenarios:
            for rep in range(args.repeat):
                for label, policy, extra in args.contenders:
                    results["runs"].append(b.run_one(scenario, label, policy, extra, rep))
        results["commands"] = b.commands
        results["notes"] = b.notes
    results["machine"]["loadavg_end"] = benchlib.loadavg()
    results["elapsed_s"] = round(time.time() - started, 1)
    results["summary"] = balance_report.summarize(results)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(results, f, indent=1)
    log(f"results: {args.json} ({results['elapsed_s']} s)")
    if args.docs:
        log(f"wrote {balance_report.write_docs(results, args.docs)}")
    return results


def main(argv=None):
    res = run(parse_args(argv))
    print(json.dumps(res["summary"], indent=1))


if __name__ == "__main__":
    main()
