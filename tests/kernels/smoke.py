# SPDX-License-Identifier: Apache-2.0
"""The kernel matrix's smoke: run inside a VM (tests/kernels/vm-run) on one
kernel, on a simulated node (testbed: netns pods, kube-proxy rules, cgroups),
against the h2splitd and h2splitctl in $H2SPLIT_BUILD.

Each check is timed and recorded as ok, FAIL (with what was seen) or skip
(with why); the JSON written to --results after every check is what the host
turns into the table (tests/kernels/table.py), so a VM that dies midway still
reports the checks it finished. Checks: preflight, adoption (of the channel
setup opened before h2splitd first started), attach, redirect_v4,
redirect_v6, getpeername, spread, bpftool_maps, fail_open, restart, uninstall.
"notes" collects what h2splitd said this kernel lacks; "adoption" what the
adoption check saw (result, mechanism, failed RPCs, time, split).
"""

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import time
import traceback

import testbed

BUILD = os.environ.get("H2SPLIT_BUILD", "/h2s/bin")
LISTEN4, LISTEN6 = "169.254.20.11:15001", "[fd00:10:20::11]:15001"
# As `bpftool -j cgroup show` names them.
ATTACH_TYPES = ("cgroup_inet4_connect", "cgroup_inet6_connect", "cgroup_sock_ops",
                "cgroup_inet4_getpeername", "cgroup_inet6_getpeername", "cgroup_inet_sock_release")
# Map types the kernel takes no BTF key/value types for (libbpf loads them without).
NO_BTF_TYPES = ("sockmap", "sockhash", "reuseport_sockarray")
RPCS = 30
ADMIN = "http://127.0.0.1:9901"  # testbed.Node.daemon_args()
ADOPT_RESULTS = ("idle", "forced", "not_idle", "gone", "failed", "unsupported")
SLOW = 120  # deadline for anything a TCG guest on a busy host does (never a pace)
PEERNAME = ("import socket,sys,json; s=socket.create_connection((sys.argv[1], int(sys.argv[2])),"
            " timeout=10); print(json.dumps(list(s.getpeername()[:2])))")


class CheckFailed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise CheckFailed(what)


class Smoke:
    def __init__(self, results_path):
        self.path = results_path
        self.out = {"kernel": platform.release(), "checks": [], "notes": []}
        self.node = self.svc = self.clientpod = self.daemon = None
        self.servers = []
        self.loop, self.loop_error, self.t_daemon = None, "", None
        self.help = subprocess.run([f"{BUILD}/h2splitd", "--help"], capture_output=True,
                                   text=True).stdout

    # ---- bookkeeping -----------------------------------------------------
    def record(self, name, status, seconds, detail=""):
        self.out["checks"].append({"name": name, "status": status,
                                   "seconds": round(seconds, 1), "detail": detail})
        print(f"SMOKE {name} {status} {seconds:.1f}s {detail}", flush=True)
        with open(self.path + ".new", "w") as f:
            json.dump(self.out, f, indent=1)
        os.replace(self.path + ".new", self.path)

    def check(self, name, fn):
        t0 = time.monotonic()
        try:
            detail = fn() or ""
            status = "skip" if detail.startswith("skip:") else "ok"
            self.record(name, status, time.monotonic() - t0, detail.removeprefix("skip:").strip())
        except Exception as e:  # any failure is this check's result, and the next ones run
            msg = str(e).strip().splitlines()
            traceback.print_exc()
            self.record(name, "FAIL", time.monotonic() - t0, " | ".join(msg[:3])[:300])

    # ---- helpers ---------------------------------------------------------
    def ctl(self, *args):
        r = subprocess.run([f"{BUILD}/h2splitctl", "--bpffs", self.node.bpffs, "-o", "json",
                            *args], capture_output=True, text=True, timeout=SLOW)
        expect(r.returncode == 0, f"h2splitctl {' '.join(args)}: {r.stderr.strip()}")
        return json.loads(r.stdout)

    def counter(self, name):
        return self.ctl("counters")[name]

    def bpftool(self, *args):
        r = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, timeout=SLOW)
        expect(r.returncode == 0, f"bpftool {' '.join(args)}: exit {r.returncode} "
               f"{r.stderr.strip()} {r.stdout.strip()}")
        return json.loads(r.stdout.strip() or "null")

    def attached(self):
        """Attach types of the programs on the pods' cgroup. Debian 12's bpftool
        (7.1) queries with a field 5.10 does not know (prog_attach_flags, for
        BPF_LSM_CGROUP) and fails there; the cgroup links say the same."""
        try:
            progs = self.bpftool("cgroup", "show", self.node.pods_cgroup) or []
        except CheckFailed:
            self.note("bpftool 7.1 `cgroup show` fails on this kernel (its query carries "
                      "prog_attach_flags, 6.0+); attachments checked through `bpftool link`")
            cg_id = os.stat(self.node.pods_cgroup).st_ino
            progs = [link for link in self.bpftool("link", "show") or []
                     if link.get("type") == "cgroup" and link.get("cgroup_id") == cg_id]
        return sorted(p["attach_type"] for p in progs)

    def start_daemon(self):
        argv = [f"{BUILD}/h2splitd", *self.node.daemon_args(), "--listen", LISTEN4,
                "--listen", LISTEN6, "--log-level", "debug"]
        self.daemon = self.node.popen(argv, name="h2splitd", watch=True,
                                      stderr=subprocess.STDOUT)
        try:
            self.daemon.wait_line(r"msg=redirecting", SLOW)
        except Exception as e:
            raise CheckFailed(f"h2splitd not redirecting: {self.daemon.log_tail()[-600:]}") from e

    def adopt_json(self):
        r = self.node.run(["curl", "-sS", "--max-time", "10", ADMIN + "/adopt"], timeout=SLOW)
        return json.loads(r.stdout)

    def adopt_metrics(self):
        """h2split_adopted_connections_total by result (0 where not shown)."""
        r = self.node.run(["curl", "-sS", "--max-time", "10", ADMIN + "/metrics"], timeout=SLOW)
        got = dict(re.findall(r'^h2split_adopted_connections_total\{result="(\w+)"\} (\S+)$',
                              r.stdout, re.M))
        return {k: int(float(got.get(k, 0))) for k in ADOPT_RESULTS}

    def sports(self):
        """Source ports of the client pod's connections straight to the v4 ClusterIP."""
        out = self.clientpod.run(["ss", "-Htn", "state", "established"]).stdout
        peer = re.compile(rf"\s\[?(::ffff:)?{re.escape(self.svc.vip4)}\]?:50051\s")
        return [line for line in out.splitlines() if peer.search(line + " ")]

    def open_loop(self):
        """One grpcio channel (testbed.grpc_loop, no connectivity watcher, as
        most apps) from the client pod to the v4 ClusterIP, an RPC every 10 ms;
        h2splitd is not running, so kube-proxy's DNAT pins it to one pod."""
        self.loop = self.clientpod.popen(
            [testbed.python(), "-m", "testbed.grpc_loop", "--target", self.svc.target4,
             "--pace-ms", "10", "--report-ms", "100"], name="grpc-loop", watch=True)
        self.loop.wait_line(r'^\{"ready"', SLOW)
        p = self.loop_wait(RPCS)
        expect(len(p["pods"]) == 1 and p["ok"] == p["n"], f"before h2splitd: {p}")
        expect(len(self.sports()) == 1, f"before h2splitd, to the ClusterIP: {self.sports()}")

    def loop_summary(self):
        for line in reversed(self.loop.lines):
            if line.startswith('{"n"'):
                try:
                    return json.loads(line)
                except ValueError:  # cut short as the process ends
                    continue
        return None

    def loop_wait(self, more):
        """The channel's summary once it has made ``more`` RPCs beyond now."""
        start = (testbed.wait_for(self.loop_summary, SLOW, "grpc_loop's first summary"))["n"]
        return testbed.wait_for(lambda: (p := self.loop_summary())["n"] >= start + more and p,
                                SLOW, f"the channel to make {more} more RPCs")

    def stop_loop(self):
        if self.loop is None or self.loop.poll() is not None:
            return self.loop and self.loop_summary()
        self.loop.send_signal(signal.SIGTERM)
        self.loop.wait(SLOW)
        return self.loop_summary()

    def daemon_log(self):
        with open(self.daemon.log_path, errors="replace") as f:
            return f.read()

    def rpcs(self, target, n=RPCS):
        c = self.clientpod.grpc_client(target, timeout=SLOW)
        try:
            return c.unary(n, timeout=SLOW)
        finally:
            c.close()

    def peername(self, vip):
        r = self.clientpod.run([testbed.python(), "-c", PEERNAME, vip, "50051"], timeout=SLOW)
        return json.loads(r.stdout)

    def kernel_facts(self):
        """What this kernel has that h2split uses or may use (adoption of
        existing connections, issue "Live clusters", depends on the last three)."""
        with open("/proc/kallsyms") as f:
            syms = set(line.split()[2] for line in f)
        config = {}
        try:
            with open(f"/boot/config-{platform.release()}") as f:
                config = dict(line.strip().split("=", 1) for line in f if "=" in line
                              and not line.startswith("#"))
        except OSError:
            pass
        yes = {True: "yes", False: "no"}
        self.out["facts"] = {
            "kernel BTF (/sys/kernel/btf/vmlinux)": yes[os.path.exists("/sys/kernel/btf/vmlinux")],
            "sk_reuseport migration (tcp_migrate_req)":
                yes[os.path.exists("/proc/sys/net/ipv4/tcp_migrate_req")],
            "bpf_iter over TCP sockets": yes[any(n.startswith("bpf_iter_tcp_") for n in syms)],
            "kfunc bpf_sock_destroy": yes["bpf_sock_destroy" in syms],
            "sock_diag destroy (CONFIG_INET_DIAG_DESTROY)":
                yes[config.get("CONFIG_INET_DIAG_DESTROY") == "y"] if config else "?",
        }

    # ---- the checks ------------------------------------------------------
    def setup(self):
        self.kernel_facts()
        self.node = testbed.Node().setup()
        self.servers = self.node.add_server_pods(["server-0", "server-1", "server-2"],
                                                 timeout=SLOW)
        self.clientpod = self.node.add_pod("client-0")
        self.svc = self.node.add_service("echo", 50051, pods=self.servers, family="dual")
        if "--adopt-existing" in self.help:
            try:
                self.open_loop()
            except Exception as e:  # the adoption check reports it; the rest runs
                traceback.print_exc()
                self.loop_error = str(e).strip()[:200]
                self.stop_loop()
                self.loop = None

    def preflight(self):
        self.t_daemon = time.monotonic()
        self.start_daemon()
        log = self.daemon_log()
        for pat in (r"reuseport_migration_unsupported", r"no kernel BTF", r"no_dummy_device",
                    r"unsupported", r"fallback"):
            for line in re.findall(rf"^.*{pat}.*$", log, re.M):
                self.note(re.sub(r"^.*?level=\w+ ", "", line).strip())
        expect("bpf installed" in log, "no 'bpf installed' in h2splitd's log")
        self.note_migration()
        return "h2splitd's preflight passed, programs loaded"

    def note(self, text):
        if text not in self.out["notes"]:
            self.out["notes"].append(text)

    def note_migration(self):
        """Whether the listeners' sk_reuseport program is there, and whether
        this kernel can migrate a closing listener's queue (5.14+, which also
        brought net.ipv4.tcp_migrate_req)."""
        loaded = any(p.get("name") == "h2s_migrate" for p in self.bpftool("prog", "show") or [])
        can = os.path.exists("/proc/sys/net/ipv4/tcp_migrate_req")
        if loaded and not can:
            self.note("h2s_migrate loads (before 5.14 the kernel ignores its expected attach "
                      "type, so h2splitd's probe passes and logs no "
                      "reuseport_migration_unsupported) and selects the ready daemon's "
                      "listeners, but nothing migrates a closing listener's queue "
                      "(no net.ipv4.tcp_migrate_req: 5.14+)")
        elif not loaded:
            self.note("h2s_migrate not loaded: no sk_reuseport program on the listeners")

    def attach(self):
        got = self.attached()
        expect(got == sorted(ATTACH_TYPES), f"attached to the pods' cgroup: {got}")
        links = sorted(os.listdir(os.path.join(self.node.bpffs, "links")))
        expect(len(links) == len(ATTACH_TYPES), f"pinned links: {links}")
        st = self.ctl("status")
        expect(st["installed"] and st["attached"] and st["redirecting"],
               f"h2splitctl status: installed={st['installed']} attached={st['attached']} "
               f"redirecting={st['redirecting']}")
        alive = [f for f, lis in st["listeners"].items() if lis["alive"]]
        expect(sorted(alive) == ["v4", "v6"], f"h2splitctl status: live listeners {alive}")
        return (f"{len(got)} programs attached by {len(links)} pinned links; h2splitctl status: "
                "attached, redirecting, v4 and v6 listeners alive")

    def redirect(self, family):
        vip = self.svc.vip4 if family == 4 else self.svc.vip6
        before = self.counter("redirected")
        r = self.rpcs(self.svc.target(family))
        expect(r["ok"] == RPCS, f"{r['ok']}/{RPCS} RPCs ok: {r.get('errors')} {r.get('details')}")
        expect(self.counter("redirected") == before + 1,
               f"redirected counter {before} -> {self.counter('redirected')}")
        orig = re.escape(vip if family == 4 else f"[{vip}]")
        self.daemon.wait_line(rf"accepted client=\S+ orig={orig}:50051 ", SLOW)
        return f"{RPCS} RPCs via {vip} went through h2splitd"

    def getpeername(self):
        got4, got6 = self.peername(self.svc.vip4), self.peername(self.svc.vip6)
        expect(got4 == [self.svc.vip4, 50051], f"v4 getpeername {got4}")
        expect(got6 == [self.svc.vip6, 50051], f"v6 getpeername {got6}")
        return "v4 and v6 ClusterIP:port"

    def spread(self):
        r = self.rpcs(self.svc.target4)
        pods = r["pods"]
        split = "/".join(str(pods.get(s.name, 0)) for s in self.servers)
        expect(r["ok"] == RPCS, f"{r['ok']}/{RPCS} ok")
        # kube-proxy alone puts all 30 on one pod; the balancer's exact split
        # depends on latencies, which TCG on a shared host makes noisy.
        expect(len(pods) == 3 and min(pods.values()) >= RPCS // 10,
               f"one channel's {RPCS} RPCs over server-0/1/2: {split}")
        return f"one channel, {RPCS} RPCs: {split}"

    def bpftool_maps(self):
        names = sorted(n for n in os.listdir(self.node.bpffs) if n.startswith("h2s_"))
        expect(len(names) >= 8, f"pinned maps: {names}")
        filled, socks = 0, []
        for n in names:
            path = os.path.join(self.node.bpffs, n)
            entries = self.bpftool("map", "dump", "pinned", path)
            if not entries:
                continue
            filled += 1
            if self.bpftool("map", "show", "pinned", path)["type"] in NO_BTF_TYPES:
                socks.append(n)
                continue
            expect(all("formatted" in e for e in entries), f"{n}: no BTF-formatted entries")
            f = entries[0]["formatted"]
            expect(isinstance(f.get("key"), (dict, int)) or "values" in f or "value" in f,
                   f"{n}: {json.dumps(f)[:120]}")
        expect(filled >= 3, f"only {filled} maps had entries")
        listed = sorted(s["vip"] for s in self.ctl("services"))
        expect(listed == sorted([self.svc.vip4, self.svc.vip6]),
               f"h2splitctl services: {listed}")
        return (f"{len(names)} h2s_* maps dumped, {filled} non-empty, all with field names "
                f"but the sockmaps {', '.join(socks)} (no BTF for socket maps)")

    def fail_open(self):
        self.daemon.send_signal(signal.SIGKILL)
        self.daemon.wait(SLOW)
        before = self.ctl("counters")
        r = self.rpcs(self.svc.target4, 5)
        after = self.ctl("counters")
        expect(r["ok"] == 5, f"{r['ok']}/5 RPCs ok after kill -9: {r.get('details')}")
        expect(after["redirected"] == before["redirected"], "a connect was still redirected")
        expect(after["bypass_no_listener"] > before["bypass_no_listener"],
               "bypass_no_listener did not grow")
        return f"after kill -9: 5/5 RPCs straight to the ClusterIP ({list(r['pods'])[0]})"

    def restart(self):
        self.start_daemon()
        log = self.daemon_log()
        updated = len(re.findall(r"bpf program updated in place", log))
        expect(updated == len(ATTACH_TYPES), f"{updated} pinned links updated in place")
        got = self.attached()
        expect(got == sorted(ATTACH_TYPES), f"attached after restart: {got}")
        before = self.counter("redirected")
        r = self.rpcs(self.svc.target4)
        expect(r["ok"] == RPCS and len(r["pods"]) == 3, f"after restart: {r['pods']}")
        expect(self.counter("redirected") == before + 1, "not redirected after restart")
        return f"{updated} pinned links taken over, redirecting again"

    def adoption(self):
        """The channel opened in setup, before h2splitd first ran, straight to
        the ClusterIP through kube-proxy's DNAT and pinned to one pod: h2splitd
        (--adopt-existing idle, the default) closes it while idle with
        sock_diag SOCK_DESTROY in the client pod's netns, grpcio reconnects
        through the redirect and the same channel's RPCs spread over the pods.
        Where the kernel lacks CONFIG_INET_DIAG_DESTROY, h2splitd must say
        `adopt_unsupported` and count result="unsupported" instead."""
        if "--adopt-existing" not in self.help:
            return "skip: adoption not built (h2splitd --help has no --adopt-existing)"
        expect(self.loop is not None, f"no channel opened before h2splitd: {self.loop_error}")
        info = self.out["adoption"] = {}
        try:
            return self.adoption_checks(info)
        finally:
            self.stop_loop()

    def adoption_checks(self, info):
        line = self.daemon.wait_line(r"msg=adopt_pass pass=1 ", SLOW)
        got = dict(re.findall(r" (\w+)=(\d+)", line))
        has_destroy = self.out["facts"]["sock_diag destroy (CONFIG_INET_DIAG_DESTROY)"]
        if got.get("unsupported", "0") != "0" or "adopt_unsupported" in self.daemon_log():
            info["result"] = "unsupported"
            info["mechanism"] = "none: no sock_diag destroy"
            expect(has_destroy != "yes", "h2splitd says adopt_unsupported, but the kernel "
                   f"has CONFIG_INET_DIAG_DESTROY=y: {line}")
            expect("msg=adopt_unsupported mechanism=sock_diag_destroy" in self.daemon_log(),
                   "result=unsupported counted without an adopt_unsupported log line")
            expect(self.adopt_metrics()["unsupported"] >= 1, "no result=unsupported counted")
            expect(not self.adopt_json()["supported"], "/adopt says supported")
            p = self.loop_wait(20)
            expect(len(p["pods"]) == 1 and not p["errors"], f"the old channel: {p}")
            return ("skip: unsupported: this kernel has no CONFIG_INET_DIAG_DESTROY; h2splitd "
                    "logged adopt_unsupported, counted result=\"unsupported\", and the "
                    "channel stayed on its pod, unharmed")
        # The same channel, after the close: every pod gets its RPCs (timed
        # first, before the slower looks at metrics and logs below).
        base = dict(self.loop_summary()["pods"])

        def spread():
            pods = self.loop_summary()["pods"]
            return all(pods.get(s.name, 0) > base.get(s.name, 0) for s in self.servers)
        try:
            testbed.wait_for(spread, SLOW, "the old channel's RPCs on every pod", interval=0.05)
        except TimeoutError as e:
            raise CheckFailed(f"{e}; {line.strip()}") from None
        secs = time.monotonic() - self.t_daemon
        counts = self.adopt_metrics()
        adopted = {r: counts[r] for r in ("idle", "forced") if counts[r]}
        expect(sum(adopted.values()) == 1 and got.get("connections") == "1",
               f"h2split_adopted_connections_total {counts}; {line.strip()}")
        result = next(iter(adopted))
        info["result"] = result
        conns = [x for x in self.daemon.lines if "msg=adopt_connection " in x]
        # gRPC core's sockets are dual-stack: the peer may read ::ffff:VIP.
        dst = re.compile(rf"dst=(::ffff:)?{re.escape(self.svc.vip4)}:50051 ")
        expect(len(conns) == 1 and f"result={result} " in conns[0] and dst.search(conns[0]),
               f"adopt_connection: {conns}")
        st = self.adopt_json()
        expect(st["supported"] and st["total"].get(result) == 1, f"/adopt: {st}")
        info["mechanism"] = "sock_diag destroy"
        self.loop_wait(RPCS)
        expect(self.sports() == [], "the old direct connection to the ClusterIP is still open")
        orig = re.escape(f"orig={self.svc.vip4}:50051 ")
        expect(any(re.search(rf"accepted client=\S+ {orig}", x) for x in self.daemon.lines),
               "h2splitd logged no accepted connection for the ClusterIP (the reconnect)")
        summary = self.stop_loop()
        while True:  # the next checks wait for their own lines, not these
            try:
                self.daemon.next_line(0.01)
            except TimeoutError:
                break
        after = {s.name: summary["pods"].get(s.name, 0) - base.get(s.name, 0)
                 for s in self.servers}
        errors = {k: v for k, v in summary["errors"].items() if v}
        failed = sum(errors.values())
        info["failed RPCs (grpcio, at most 1)"] = str(failed)
        info["adopt_pass (h2splitd's log)"] = f"{got.get('ms', '?')} ms"
        info["h2splitd start -> spread"] = f"{secs:.1f} s"
        expect(set(errors) <= {"UNAVAILABLE"} and failed <= 1,
               f"grpcio lost {failed} RPCs: {errors} {summary['details'][:2]}")
        split = "/".join(str(after[s.name]) for s in self.servers)
        info["the channel's next RPCs, server-0/1/2"] = split
        return (f"result={result} by sock_diag destroy; the channel's next RPCs "
                f"{split} over server-0/1/2, {failed} failed ({summary['n']} in all), "
                f"{secs:.1f} s from h2splitd's start")

    def uninstall(self):
        """Nothing of this install is left; its programs and maps are known by
        id (from the pins), so other h2split installs on the machine don't count."""
        pins = self.node.bpffs
        links = os.path.join(pins, "links")
        prog_ids = {self.bpftool("link", "show", "pinned", os.path.join(links, n))["prog_id"]
                    for n in os.listdir(links)}
        map_ids = {self.bpftool("map", "show", "pinned", os.path.join(pins, n))["id"]
                   for n in os.listdir(pins) if n.startswith("h2s_")}
        self.daemon.send_signal(signal.SIGTERM)
        self.daemon.wait(SLOW)
        r = self.node.run([f"{BUILD}/h2splitd", "--uninstall", "--bpffs", self.node.bpffs,
                           "--listen", LISTEN4, "--listen", LISTEN6], timeout=SLOW)
        expect("uninstalled" in r.stdout, f"h2splitd --uninstall said {r.stdout!r}")
        left = os.listdir(self.node.bpffs) if os.path.exists(self.node.bpffs) else []
        expect(not left, f"pins left: {left}")
        expect(self.attached() == [], f"still attached: {self.attached()}")

        def gone():
            progs = {p["id"] for p in self.bpftool("prog", "show") or []}
            maps = {m["id"] for m in self.bpftool("map", "show") or []}
            return not (progs & prog_ids or maps & map_ids)
        testbed.wait_for(gone, SLOW, f"programs {sorted(prog_ids)} and maps {sorted(map_ids)} "
                         "to be freed")
        addrs = self.node.run(["ip", "-o", "addr"]).stdout
        expect("169.254.20.11" not in addrs, "listen address left")
        expect(self.peername(self.svc.vip4) == [self.svc.vip4, 50051], "VIP after uninstall")
        return (f"no pins, no attachments, its {len(prog_ids)} programs and {len(map_ids)} maps "
                "freed, no listen address")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    a = ap.parse_args()
    s = Smoke(a.results)
    t0 = time.monotonic()
    try:
        s.setup()
        s.record("setup", "ok", time.monotonic() - t0, "node, 3 gRPC server pods, 1 client pod")
    except Exception as e:
        traceback.print_exc()
        s.record("setup", "FAIL", time.monotonic() - t0, str(e)[:300])
        return 1
    try:
        s.check("preflight", s.preflight)
        s.check("adoption", s.adoption)
        s.check("attach", s.attach)
        s.check("redirect_v4", lambda: s.redirect(4))
        s.check("redirect_v6", lambda: s.redirect(6))
        s.check("getpeername", s.getpeername)
        s.check("spread", s.spread)
        s.check("bpftool_maps", s.bpftool_maps)
        s.check("fail_open", s.fail_open)
        s.check("restart", s.restart)
        s.check("uninstall", s.uninstall)
    finally:
        s.stop_loop()
        s.node.teardown()
    return 0 if all(c["status"] != "FAIL" for c in s.out["checks"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
