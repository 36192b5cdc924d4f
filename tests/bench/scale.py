# SPDX-License-Identifier: Apache-2.0
"""Scale benchmark: h2splitd as the node of a large cluster. ``make bench-scale`` runs it.

  scale.py [--services 5000] [--endpoints 10] [--big 5000] [--workers 2]
           [--requests 20000] [--changes 5] [--traffic-services 5000]
           [--daemon PATH] [--json FILE] [--prefix h2sscale]
           [--skip-file] [--skip-kube] [--skip-cpu]

Every Service is opted in, with one EndpointSlice of --endpoints ready
endpoints. Endpoint addresses are AnyIP addresses of one "sink" pod (a local
route of 10.128.0.0/14 in its netns, routed there by the node), where one
grpc_backend answers on every address: any endpoint can take a real stream.

Phases (figures in --json, a summary on stdout):
  file   the services file holds the whole List. Sync: from exec of
         h2splitd to its log line msg=redirecting (the first state applied in
         every worker and the listeners in the BPF liveness map; the daemon's
         own ts=, so no polling error), also from its msg=started line, and
         the CPU-seconds (utime+stime) it had used when we read that line,
         which a busy machine does not inflate as it does wall time.
         RSS (VmRSS, VmHWM) once redirecting; BPF map memory: memlock of
         every h2s_* map the daemon holds (/proc/PID/fdinfo). Then one gRPC
         call to each of --traffic-services Services, and a scrape of
         /metrics and /endpoints: how many Services and endpoints have their
         own series, and h2split_metrics_overflow_total. Then --changes
         single-EndpointSlice changes (one endpoint replaced): services file
         renamed in -> state_applied (every worker routes by it), from the
         daemon's log.
  kube   the same objects from the stand-in API (testbed/kube_api.py) over
         list+watch: sync and RSS as above; --changes EndpointSlice MODIFIED
         events: the fixture's apply -> state_applied, and the part of it after
         the source delivered (kube_state log line).
  cpu    under callgrind, the same daemon (1 worker, every Service loaded)
         serves --requests unary calls through a 3-endpoint Service, then the
         same through a --big-endpoint one, each after a warm-up that opens an
         upstream connection to every endpoint: instructions per request, and
         the inclusive instructions of balancer_set_pick() per call.
"""

import argparse
import glob
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402
from benchlib import log, testbed  # noqa: E402
from testbed.kube_api import KubeAPIProcess, endpoint_slice, namespace, service  # noqa: E402

PORT = 50051
NS = "scale"
ANYIP = "10.128.0.0/14"
EP_BASE = int(ipaddress.ip_address("10.128.0.0"))
BIG_BASE = int(ipaddress.ip_address("10.131.0.0"))
VIP_BASE = int(ipaddress.ip_address("10.100.0.0"))
PATH = "/bench.Echo/Unary"
# Changes are spaced past the sources' coalescing window (100 ms): each is a
# lone EndpointSlice change, not part of a burst.
CHANGE_GAP_S = 0.3
TS = re.compile(r"^ts=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--services", type=int, default=5000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--big", type=int, default=5000, help="endpoints of the big Service")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--changes", type=int, default=5)
    ap.add_argument("--traffic-services", type=int, default=5000)
    ap.add_argument("--prefix", default=os.environ.get("H2S_TESTBED_PREFIX", "h2sscale"))
    ap.add_argument("--daemon", help="h2splitd binary (default BUILD/h2splitd)")
    ap.add_argument("--skip-file", action="store_true")
    ap.add_argument("--skip-kube", action="store_true")
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--json", help="results (default BUILD/bench/scale.json)")
    ap.add_argument("--before", help="scale.json of an earlier build: a before/after table")
    ap.add_argument("--docs", default=os.path.join(benchlib.REPO_DIR, "docs"),
                    help="update the Scale section of DOCS/benchmarks.md ('': don't)")
    a = ap.parse_args(argv)
    if a.json is None:
        a.json = os.path.join(benchlib.build_dir(), "bench", "scale.json")
    return a


def ip(n):
    return str(ipaddress.ip_address(n))


def vip(i):
    return ip(VIP_BASE + 1 + i)


def svc_name(i):
    return f"svc-{i:05d}"


def ep_ips(i, n, gen=0):
    """Endpoints of scale Service i; generation ``gen`` replaces the first one."""
    ips = [ip(EP_BASE + 1 + i * 16 + j) for j in range(n)]
    if gen:
        ips[0] = ip(EP_BASE + 1 + i * 16 + 15 - gen % 5)
    return ips


def objects(a, extra=()):
    """(services, endpointslices) of the whole cluster, plus ``extra``
    (name, vip, [ips]) Services."""
    svcs, slices = [], []
    spec = [(svc_name(i), vip(i), ep_ips(i, a.endpoints)) for i in range(a.services)]
    for name, v, ips in spec + list(extra):
        svcs.append(service(name, NS, v, PORT))
        slices.append(endpoint_slice(name, NS, ips, port=PORT))
    return svcs, slices


def kubectl_list(svcs, slices):
    return {"apiVersion": "v1", "kind": "List", "items": svcs + slices,
            "metadata": {"resourceVersion": ""}}


def write_json(path, doc):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def log_ts(line):
    """The daemon's ts= of a log line, as a Unix time."""
    m = TS.match(line)
    if not m:
        return None
    return time.mktime(time.strptime(m.group(1)[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone \
        + int(m.group(1)[20:]) / 1000.0


def bpf_maps(pid):
    """{name: memlock bytes} of the BPF maps h2splitd holds open."""
    out, seen = {}, set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        except OSError:
            continue
        if "map_id" not in info or info["map_id"] in seen:
            continue
        seen.add(info["map_id"])
        r = subprocess.run(["bpftool", "-j", "map", "show", "id", info["map_id"]],
                           capture_output=True, text=True)
        name = json.loads(r.stdout).get("name", "?") if r.returncode == 0 else "?"
        out[name] = out.get(name, 0) + int(info.get("memlock", 0))
    return out


def cpu_ns(pid):
    """CPU time every thread of |pid| ran, in ns (schedstat: exact, unlike ticks)."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total


def proc_status(pid):
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                vals[k] = int(v.split()[0])
    return vals


class Scale:
    def __init__(self, node, a):
        self.node, self.a = node, a
        self.build = benchlib.build_dir()
        self.work = os.path.join(node.workdir, "scale")
        os.makedirs(self.work, exist_ok=True)
        self.body = benchlib.grpc_message(os.path.join(self.work, "msg.bin"), 10)
        self.sink = node.add_pod("sink")
        self.sink.run(["ip", "route", "add", "local", ANYIP, "dev", "lo"])
        # Via the pod's own address: one neighbour entry, not one per endpoint.
        node.run(["ip", "route", "add", ANYIP, "via", self.sink.ip4, "dev", self.sink.veth,
                  "onlink"])
        be = self.sink.popen([benchlib.bench_bin("grpc_backend"), "--port", str(PORT),
                              "--threads", "2"], name="grpc-backend", watch=True)
        be.wait_line("^ready", 15)
        self.client = node.add_pod("load")
        self.daemon_bin = a.daemon or os.path.join(self.build, "h2splitd")

    # ---- a daemon and its log --------------------------------------------

    def start(self, args, wrapper=(), workers=None, timeout=120):
        argv = list(wrapper) + [self.daemon_bin, "--cgroup", self.node.pods_cgroup,
                                "--bpffs", self.node.bpffs, "--admin", "127.0.0.1:9901",
                                "--listen", "169.254.20.11:15001", "--workers",
                                str(workers or self.a.workers), "--log-level", "info", *args]
        t0 = time.time()
        p = self.node.popen(argv, name="h2splitd", watch=True, stderr=subprocess.STDOUT)
        line = p.wait_line(r"msg=redirecting", timeout)
        cpu = benchlib.cpu_seconds([p.pid])
        started = next((log_ts(s) for s in p.lines if "msg=started" in s), None)
        self.version = next((re.search(r"version=(\S+)", s).group(1) for s in p.lines
                             if "msg=started" in s), None)
        ready = log_ts(line)
        r = self.node.run(["curl", "-sf", "--max-time", "10", "http://127.0.0.1:9901/readyz"],
                          check=False)
        if not r.stdout.startswith("ready"):
            raise RuntimeError(f"/readyz after msg=redirecting: {r.stdout!r}")
        return p, {"exec_to_redirecting_s": round(ready - t0, 3),
                   "cpu_s_at_redirecting": round(cpu, 3),
                   "started_to_redirecting_s": round(ready - started, 3) if started else None,
                   "readyz": r.stdout.strip()[:60]}

    def memory(self, p):
        st = proc_status(p.pid)
        maps = bpf_maps(p.pid)
        h2s = {k: v for k, v in maps.items() if k.startswith("h2s_")}
        return {"rss_kib": st["VmRSS"], "hwm_kib": st["VmHWM"],
                "rss_mib": round(st["VmRSS"] / 1024, 1),
                "bpf_maps_memlock_mib": round(sum(h2s.values()) / 2**20, 2),
                "bpf_maps": dict(sorted(h2s.items(), key=lambda kv: -kv[1]))}

    def wait_applied(self, p, mark, timeout=30):
        """ts of the first state_applied line after line ``mark``, and its index."""
        rx = re.compile(r"msg=state_applied ")
        found = testbed.wait_for(
            lambda: next((i for i in range(mark, len(p.lines)) if rx.search(p.lines[i])), None),
            timeout, "h2splitd to log state_applied")
        return log_ts(p.lines[found]), found

    def logged_after(self, p, mark, pattern):
        rx = re.compile(pattern)
        return next((log_ts(p.lines[i]) for i in range(mark, len(p.lines))
                     if rx.search(p.lines[i])), None)

    # ---- coverage: a call to every Service, then the scrape ---------------

    def touch_services(self, n):
        script = os.path.join(self.work, "touch.py")
        with open(script, "w") as f:
            f.write(TOUCH)
        vips = os.path.join(self.work, "vips.txt")
        with open(vips, "w") as f:
            f.write("\n".join(vip(i) for i in range(n)) + "\n")
        r = self.client.run(["/usr/bin/python3", script, vips, str(PORT), PATH],
                            timeout=1200, check=False)
        m = re.search(r"ok=(\d+) failed=(\d+)", r.stdout)
        if not m:
            raise RuntimeError(f"touch.py: {r.stdout}{r.stderr}")
        return int(m.group(1)), int(m.group(2))

    def scrape(self):
        text = self.node.run(["curl", "-sf", "--max-time", "120",
                              "http://127.0.0.1:9901/metrics"], timeout=150).stdout
        svcs = set(re.findall(
            r'^h2split_service_request_duration_seconds_count\{service="([^"]+)"\} [1-9]',
            text, re.M))
        eps = re.findall(r'^h2split_endpoint_requests_total\{([^}]*)\} (\d+)', text, re.M)
        overflow = {t: int(v) for t, v in re.findall(
            r'^h2split_metrics_overflow_total\{table="([^"]+)"\} (\d+)', text, re.M)}
        doc = json.loads(self.node.run(["curl", "-sf", "--max-time", "120",
                                        "http://127.0.0.1:9901/endpoints"],
                                       timeout=150).stdout)
        listed = sum(len(s["endpoints"]) for s in doc["services"])
        with_req = sum(1 for s in doc["services"] for e in s["endpoints"] if e["requests"])
        svc_req = sum(1 for s in doc["services"] if any(e["requests"] for e in s["endpoints"]))
        return {"metrics_services_with_series": len(svcs),
                "metrics_endpoint_series": len(eps),
                "metrics_endpoint_series_nonzero": sum(1 for _, v in eps if int(v)),
                "metrics_overflow_total": overflow,
                "endpoints_listed": listed, "endpoints_with_requests": with_req,
                "services_with_requests": svc_req, "metrics_bytes": len(text)}

    # ---- phases -------------------------------------------------------------

    def file_phase(self):
        a = self.a
        path = os.path.join(self.work, "services.json")
        svcs, slices = objects(a)
        write_json(path, kubectl_list(svcs, slices))
        p, sync = self.start(["--discovery", "file", "--services-file", path])
        res = {"sync": sync, "idle": self.memory(p)}
        if a.traffic_services:
            ok, failed = self.touch_services(min(a.traffic_services, a.services))
            res["touch"] = {"ok": ok, "failed": failed}
            res["coverage"] = self.scrape()
            res["after_traffic"] = self.memory(p)
        lat = []
        for g in range(1, a.changes + 1):
            slices[g] = endpoint_slice(svc_name(g), NS, ep_ips(g, a.endpoints, g), port=PORT)
            tmp = path + ".new"
            with open(tmp, "w") as f:
                json.dump(kubectl_list(svcs, slices), f)
            time.sleep(CHANGE_GAP_S)
            mark = len(p.lines)
            c0 = cpu_ns(p.pid)
            t0 = time.time()
            os.replace(tmp, path)
            t1, i = self.wait_applied(p, mark)
            c1 = cpu_ns(p.pid)
            loaded = self.logged_after(p, mark, r"msg=services_reloaded ")
            lat.append({"event_to_applied_ms": round((t1 - t0) * 1000),
                        "cpu_ms": round((c1 - c0) / 1e6, 1),
                        "reloaded_to_applied_ms": round((t1 - loaded) * 1000) if loaded else None})
        res["changes"] = lat
        res["final"] = self.memory(p)
        p.stop(timeout=30)
        return res

    def kube_phase(self):
        a = self.a
        api = KubeAPIProcess(self.node.popen, workdir=os.path.join(self.work, "kube-api"),
                             bookmark_interval=1.0)
        try:
            api.apply("namespaces", namespace(NS))
            svcs, slices = objects(a)
            api.set_objects("services", svcs)
            api.set_objects("endpointslices", slices)
            p, sync = self.start(["--discovery", "kubernetes", "--kube-api", api.url,
                                  "--kube-token-file", api.token_file, "--kube-ca-file",
                                  api.ca_file, "--node-name", "scale-node"])
            listed = [log_ts(s) for s in p.lines if "msg=kube_list_done" in s]
            redirecting = next(log_ts(s) for s in p.lines if "msg=redirecting" in s)
            sync["lists_done_to_redirecting_s"] = round(redirecting - max(listed), 3) \
                if listed else None
            res = {"sync": sync, "idle": self.memory(p)}
            lat = []
            for g in range(1, a.changes + 1):
                obj = endpoint_slice(svc_name(g), NS, ep_ips(g, a.endpoints, g), port=PORT)
                time.sleep(CHANGE_GAP_S)
                mark = len(p.lines)
                c0 = cpu_ns(p.pid)
                t0 = time.time()
                api.apply("endpointslices", obj)
                t1, i = self.wait_applied(p, mark)
                c1 = cpu_ns(p.pid)
                delivered = self.logged_after(p, mark, r"msg=kube_state ")
                built = next((re.search(r"reused=(\d+) built=(\d+)", p.lines[j])
                              for j in range(mark, len(p.lines))
                              if "msg=kube_state " in p.lines[j]), None)
                lat.append({"event_to_applied_ms": round((t1 - t0) * 1000),
                            "cpu_ms": round((c1 - c0) / 1e6, 1),
                            "delivered_to_applied_ms":
                                round((t1 - delivered) * 1000) if delivered else None,
                            "reused": int(built.group(1)) if built else None,
                            "built": int(built.group(2)) if built else None})
            res["changes"] = lat
            res["final"] = self.memory(p)
            p.stop(timeout=30)
        finally:
            api.stop()
        return res

    def h2load(self, url, n):
        argv = ["h2load", "-n", str(n), "-c", str(self.a.conns), "-m", str(self.a.streams),
                "-d", self.body, "-H", "content-type: application/grpc", "-H", "te: trailers",
                url]
        r = self.client.run(argv, timeout=1800, check=False)
        res = benchlib.parse_h2load(r.stdout + r.stderr)
        if res["succeeded"] != n:
            raise RuntimeError(f"h2load {url}: {res['succeeded']} of {n} succeeded")
        return res

    def cpu_phase(self):
        a = self.a
        small = ("small", ip(VIP_BASE + 60001), [ip(BIG_BASE - 16 + j) for j in range(3)])
        big = ("big", ip(VIP_BASE + 60002), [ip(BIG_BASE + j) for j in range(a.big)])
        path = os.path.join(self.work, "services-cpu.json")
        svcs, slices = objects(a, extra=[small, big])
        write_json(path, kubectl_list(svcs, slices))
        out = os.path.join(self.work, "callgrind.out")
        for f in glob.glob(out + "*"):
            os.unlink(f)
        vg = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
              f"--callgrind-out-file={out}"]
        p, _ = self.start(["--discovery", "file", "--services-file", path], wrapper=vg,
                          workers=1, timeout=900)
        res = {}
        for name, v, eps in (small, big):
            url = f"http://{v}:{PORT}{PATH}"
            self.h2load(url, max(2000, 2 * len(eps)))  # an upstream connection to each
            ctl(["-i", "on"], p.pid)
            self.h2load(url, a.requests)
            ctl(["-i", "off"], p.pid)
            before = set(glob.glob(out + ".*"))
            ctl(["-d"], p.pid)
            dump = testbed.wait_for(lambda: sorted(set(glob.glob(out + ".*")) - before), 60,
                                    "callgrind to dump")[-1]
            keep = os.path.join(os.path.dirname(os.path.abspath(a.json)),
                                f"scale-callgrind-{name}.out")
            shutil.copy(dump, keep)
            res[name] = {"endpoints": len(eps), **instructions(keep, a.requests)}
        p.stop(timeout=120)
        res["ratio"] = round(res["big"]["ir_per_request"] / res["small"]["ir_per_request"], 3)
        return res


TOUCH = r'''
import sys, grpc
vips, port, path = open(sys.argv[1]).read().split(), sys.argv[2], sys.argv[3]
ok = failed = 0
for v in vips:
    ch = grpc.insecure_channel(f"{v}:{port}")
    try:
        ch.unary_unary(path)(b"0123456789", timeout=10)
        ok += 1
    except grpc.RpcError as e:
        failed += 1
        if failed < 5:
            print("fail", v, e.code(), flush=True)
    ch.close()
print(f"ok={ok} failed={failed}", flush=True)
'''


def ctl(args, pid):
    r = subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, text=True,
                       timeout=120)
    if r.returncode:
        raise RuntimeError(f"callgrind_control {args}: {r.stdout}{r.stderr}")


def instructions(dump, n):
    tot = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", dump],
                         capture_output=True, text=True, timeout=300).stdout
    total = pick = None
    for line in tot.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(.*)$", line)
        if not m:
            continue
        v = int(m.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in m.group(2):
            total = v
        elif re.search(r"\bbalancer_set_pick\b", m.group(2)) and pick is None:
            pick = v
    return {"ir_per_request": round(total / n) if total else None,
            "pick_ir_per_request": round(pick / n) if pick else None}


def report(res):
    lines = []
    for ph in ("file", "kube"):
        if ph not in res:
            continue
        r = res[ph]
        ch = [c["event_to_applied_ms"] for c in r["changes"]]
        cms = [c.get("cpu_ms") for c in r["changes"]]
        lines.append(f"{ph}: sync {r['sync']['exec_to_redirecting_s']} s "
                     f"({r['sync']['cpu_s_at_redirecting']} CPU-s) "
                     f"(started->redirecting {r['sync']['started_to_redirecting_s']} s), "
                     f"RSS {r['idle']['rss_mib']} MiB (peak {round(r['idle']['hwm_kib']/1024,1)}), "
                     f"BPF maps {r['idle']['bpf_maps_memlock_mib']} MiB, "
                     f"change applied ms {sorted(ch)}, CPU ms {cms}")
        if "coverage" in r:
            lines.append(f"  coverage: {json.dumps(r['coverage'])}; touch {r['touch']}; "
                         f"RSS after traffic {r['after_traffic']['rss_mib']} MiB")
    if "cpu" in res:
        c = res["cpu"]
        lines.append(f"cpu: Ir/request {c['small']['ir_per_request']} (3 endpoints) vs "
                     f"{c['big']['ir_per_request']} ({c['big']['endpoints']} endpoints): "
                     f"ratio {c['ratio']}; balancer_set_pick Ir/request "
                     f"{c['small']['pick_ir_per_request']} vs {c['big']['pick_ir_per_request']}")
    return "\n".join(lines)


# ---- docs/benchmarks.md ------------------------------------------------------

def figures(res):
    """(label, value, target, met) rows of one run."""
    rows = []

    def get(*path):
        v = res
        for k in path:
            if not isinstance(v, dict) or k not in v:
                return None
            v = v[k]
        return v

    def med(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if xs else None

    for ph, name in (("file", "services file"), ("kube", "stand-in API")):
        if ph not in res:
            continue
        sy = res[ph]["sync"]
        if ph == "kube" and sy.get("lists_done_to_redirecting_s") is not None:
            rows.append((f"first sync (lists done) to redirecting, {name}: wall s "
                         "(exec to redirecting; CPU-s)",
                         f"{sy['lists_done_to_redirecting_s']} ({sy['exec_to_redirecting_s']}; "
                         f"{sy.get('cpu_s_at_redirecting', '-')})", "≤ 3 s",
                         sy["lists_done_to_redirecting_s"] <= 3))
        else:
            rows.append((f"first sync to redirecting, {name}: wall s (CPU-s)",
                         f"{sy['exec_to_redirecting_s']} "
                         f"({sy.get('cpu_s_at_redirecting', '-')})",
                         "≤ 3 s", sy["exec_to_redirecting_s"] <= 3))
        idle = res[ph]["idle"]
        rows.append((f"h2splitd RSS once redirecting, {name}: MiB (peak)",
                     f"{idle['rss_mib']} ({round(idle['hwm_kib'] / 1024, 1)})", "≤ 100 MiB",
                     idle["rss_mib"] <= 100))
        ch = [c["event_to_applied_ms"] for c in res[ph]["changes"]]
        cms = [c["cpu_ms"] for c in res[ph]["changes"] if c.get("cpu_ms") is not None]
        rows.append((f"EndpointSlice change, event in to every worker, {name}: median ms "
                     f"(all)", f"{med(ch)} ({', '.join(map(str, ch))})", "≤ 100 ms",
                     med(ch) is not None and med(ch) <= 100))
        if cms:
            rows.append((f"... h2splitd CPU per change (all threads), {name}: median ms",
                         f"{med(cms)}", "", True))
    if get("file", "idle", "bpf_maps_memlock_mib") is not None:
        rows.append(("BPF map memory (memlock of the h2s_* maps)",
                     f"{res['file']['idle']['bpf_maps_memlock_mib']} MiB", "stated", True))
    cov = get("file", "coverage")
    if cov:
        n = res["params"]["traffic_services"]
        ok = (cov["metrics_services_with_series"] >= n and
              not any(cov["metrics_overflow_total"].values()) and
              cov["services_with_requests"] >= n)
        rows.append(("Services with their own series after a call to each "
                     "(/metrics; /endpoints with requests)",
                     f"{cov['metrics_services_with_series']} of {n} "
                     f"({cov['services_with_requests']}); overflow "
                     f"{cov['metrics_overflow_total']}", "all, no silent cap", ok))
    cpu = res.get("cpu")
    if cpu:
        rows.append((f"instructions per request, {cpu['big']['endpoints']}-endpoint vs "
                     "3-endpoint Service", f"{cpu['big']['ir_per_request']} / "
                     f"{cpu['small']['ir_per_request']} = {cpu['ratio']}x", "≤ 1.10x",
                     cpu["ratio"] <= 1.10))
        rows.append(("... of which balancer_set_pick() (inclusive)",
                     f"{cpu['big']['pick_ir_per_request']} / "
                     f"{cpu['small']['pick_ir_per_request']}", "", True))
    return rows


def render_docs(res, before):
    a = res["params"]
    now = figures(res)
    old = {r[0]: r[1] for r in figures(before)} if before else {}
    out = ["<!-- scale:begin -->", "## Scale: the node of a large cluster", "",
           f"Generated by `make bench-scale` (tests/bench/scale.py) on {res['started']}, "
           f"git {res['git']}, load average {res['loadavg']} (the machine was shared with "
           "other work: wall times are inflated, CPU-seconds and instruction counts are "
           "not); do not edit by hand, re-run it.", "",
           f"{a['services']} opted-in Services x {a['endpoints']} ready endpoints "
           f"({a['services'] * a['endpoints']} endpoints), {a['workers']} workers, no "
           "traffic unless said. Every endpoint is a real address: AnyIP addresses of one "
           "pod where one grpc_backend answers on all of them.", ""]
    head = "| figure | " + (f"before ({before['git']}) | " if before else "") + \
        "now | target | |"
    out += [head, "|---|" + ("---|" if before else "") + "---|---|---|"]
    for label, val, target, met in now:
        cells = [label] + ([old.get(label, "-")] if before else []) + \
            [val, target, ("**met**" if met else "**not met**") if target else ""]
        out.append("| " + " | ".join(cells) + " |")
    if before and before.get("note"):
        out += ["", f"Before: {before['note']}"]
    out += ["", "What is measured:", "",
            "- *first sync to redirecting*: from exec of h2splitd to its own log line "
            "`msg=redirecting` (its `ts=`): the first state applied in every worker and the "
            "listeners in the BPF liveness map, after which `/readyz` says ready (checked). "
            "CPU-s: utime+stime of h2splitd at that moment. With the stand-in API, the "
            "first sync is the daemon's last `kube_list_done` line: exec to redirecting "
            "includes the Python fixture serving 10,000 objects.",
            "- *RSS*: VmRSS of h2splitd once redirecting (peak: VmHWM, the JSON of the "
            "whole cluster being parsed). BPF map memory does not grow with Services up to "
            "the services map's size; it is the LRU socket maps, preallocated: " +
            ", ".join(f"{k} {round(v / 2**20, 1)} MiB" for k, v in
                      list(res.get("file", {}).get("idle", {}).get("bpf_maps", {}).items())[:4])
            + ".",
            "- *EndpointSlice change*: one endpoint of one Service replaced, "
            f"{a['changes']} times, {CHANGE_GAP_S} s apart: from the change (the services "
            "file renamed in; the fixture's watch event sent) to the daemon's "
            "`state_applied` line, logged once every worker routes by the new state. The "
            "services file is re-read and re-parsed whole at every change (after a 100 ms "
            "debounce); the Kubernetes source sends a lone change 20 ms after its event and "
            "gathers again only the Service it touched (its `kube_state` line: "
            + ", ".join(sorted({f"reused={c.get('reused')} built={c.get('built')}"
                                for c in res.get("kube", {}).get("changes", [])})) + ").",
            f"- *per-stream instructions*: callgrind, 1 worker, every Service loaded, "
            f"{a['requests']} unary 10-byte calls ({a['conns']}x{a['streams']}) through each "
            "Service after a warm-up that opened an upstream connection to every endpoint.",
            "- *series*: one gRPC call to each Service, then a scrape: Services with a "
            "`h2split_service_request_duration_seconds_count`, "
            "`h2split_metrics_overflow_total`.", ""]
    for ph in ("file",):
        if ph in res and "after_traffic" in res[ph]:
            out.append(f"After those {a['traffic_services']} calls (one upstream connection "
                       f"per Service, {a['traffic_services']} in all) RSS is "
                       f"{res[ph]['after_traffic']['rss_mib']} MiB"
                       + (f" (before: {before[ph]['after_traffic']['rss_mib']} MiB)"
                          if before and ph in before and "after_traffic" in before[ph]
                          else "") + ".")
            out.append("")
    out.append("<!-- scale:end -->")
    return "\n".join(out) + "\n"


def write_docs(res, before, docs):
    md = os.path.join(docs, "benchmarks.md")
    try:
        with open(md) as f:
            text = f.read()
    except OSError:
        text = "# h2split benchmarks\n"
    section = render_docs(res, before)
    if "<!-- scale:begin -->" in text:
        text = re.sub(r"<!-- scale:begin -->.*?<!-- scale:end -->\n?", lambda m: section,
                      text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(md, "w") as f:
        f.write(text)
    return md


def main(argv=None):
    a = parse_args(argv)
    benchlib.raise_fd_limit()
    res = {"params": {k: getattr(a, k) for k in ("services", "endpoints", "big", "workers",
                                                  "requests", "conns", "streams", "changes",
                                                  "traffic_services")},
           "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "git": benchlib.versions()["git"], "loadavg": benchlib.loadavg()}
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with testbed.Node(prefix=a.prefix) as node:
        s = Scale(node, a)
        if not a.skip_file:
            log("file source")
            res["file"] = s.file_phase()
            print(report(res), flush=True)
        if not a.skip_kube:
            log("Kubernetes source (stand-in API)")
            res["kube"] = s.kube_phase()
        if not a.skip_cpu:
            log("per-stream instructions: callgrind")
            res["cpu"] = s.cpu_phase()
        if getattr(s, "version", None):
            res["git"] = s.version  # the daemon measured, as it says
    with open(a.json, "w") as f:
        json.dump(res, f, indent=1)
    print(report(res))
    if a.docs:
        before = None
        if a.before:
            with open(a.before) as f:
                before = json.load(f)
        log(f"docs: {write_docs(res, before, a.docs)}")
    log(f"results: {a.json}")


if __name__ == "__main__":
    main()
