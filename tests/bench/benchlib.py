# SPDX-License-Identifier: Apache-2.0
"""Shared pieces of h2split's benchmarks: paths, process accounting, h2load.

What a benchmark measures about a proxy comes from /proc: CPU is
utime+stime summed over the proxy's whole process tree (master and worker
processes, every thread), memory is VmRSS summed the same way. Load comes
from h2load run inside a client pod; latency percentiles are computed from
its --log-file (one line per request), not from its summary.
"""

import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS_DIR = os.path.dirname(HERE)
REPO_DIR = os.path.dirname(TESTS_DIR)
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

import testbed  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
BENCH_PREFIX = "h2sbench"


def build_dir():
    return os.environ.get("H2SPLIT_BUILD") or os.path.join(REPO_DIR, "build")


def bench_bin(name):
    """Path of a benchmark helper built by ``make bench`` (build/bench/NAME)."""
    path = os.path.join(build_dir(), "bench", name)
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} missing: build it with 'make bench' "
                                f"(or make {os.path.relpath(path, REPO_DIR)})")
    return path


def raise_fd_limit():
    """Children inherit our RLIMIT_NOFILE: take the hard limit (proxies need fds)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- process accounting ------------------------------------------------------

def _children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid):
    """``pid`` and all its descendants that are alive now."""
    kids = _children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def cpu_seconds(pids):
    """utime+stime of live processes (all their threads), in seconds."""
    ticks = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return ticks / CLK_TCK


def cpu_split(pids):
    """(utime, stime) of live processes (all their threads), in seconds."""
    u = k = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            u, k = u + int(fields[11]), k + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return u / CLK_TCK, k / CLK_TCK


def rss_kib(pids, field="VmRSS"):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                m = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M)
            if m:
                total += int(m.group(1))
        except OSError:
            continue
    return total


class RssSampler:
    """Samples summed VmRSS of some process trees in a thread; ``peak`` per name."""

    def __init__(self, roots, interval=0.2):
        self.roots = dict(roots)  # name -> root pid
        self.peak = {n: 0 for n in self.roots}
        self.interval = interval
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def start(self):
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self):
        for name, pid in self.roots.items():
            self.peak[name] = max(self.peak[name], rss_kib(tree(pid)))

    def stop(self):
        self._stop.set()
        self._t.join(timeout=2)
        self.sample()
        return self.peak


# ---- h2load ------------------------------------------------------------------

H2LOAD_REQ = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                        r"(\d+) failed, (\d+) errored, (\d+) timeout")
H2LOAD_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
H2LOAD_FINISHED = re.compile(r"finished in ([\d.]+)(ms|s|us), ([\d.]+) req/s")


def grpc_message(path, size):
    """Write a gRPC length-prefixed message of ``size`` payload bytes to ``path``."""
    with open(path, "wb") as f:
        f.write(b"\x00" + size.to_bytes(4, "big") + (b"x" * size))
    return path


def h2load_argv(url, body, conns, streams, duration, warmup, rps=None, log_file=None,
                threads=1):
    argv = ["h2load", "-D", str(duration), "--warm-up-time", str(warmup),
            "-c", str(conns), "-m", str(streams), "-t", str(min(threads, conns)),
            "-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers",
            "-H", "user-agent: h2split-bench"]
    if rps:
        argv += ["--rps", str(rps)]
    if log_file:
        argv += ["--log-file", log_file]
    return argv + [url]


def parse_h2load(text):
    """The counters h2load prints; raises ValueError when its output is not there."""
    m = H2LOAD_REQ.search(text)
    f = H2LOAD_FINISHED.search(text)
    s = H2LOAD_STATUS.search(text)
    if not (m and f and s):
        raise ValueError("h2load printed no summary:\n" + text[-2000:])
    total, started, done, ok, failed, errored, timeout = map(int, m.groups())
    secs = float(f.group(1)) / {"s": 1, "ms": 1e3, "us": 1e6}[f.group(2)]
    return {"requests": total, "done": done, "succeeded": ok, "failed": failed,
            "errored": errored, "timeout": timeout, "status_2xx": int(s.group(1)),
            "status_non2xx": sum(map(int, s.groups()[1:])), "seconds": secs,
            "rps_h2load": float(f.group(3))}


def latency_from_log(path):
    """p50/p90/p99/max/mean request latency in microseconds from h2load --log-file
    (lines: start_us TAB status TAB duration_us), and the non-2xx count."""
    durs, bad = [], 0
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 3:
                continue
            if not parts[1].startswith("2"):
                bad += 1
            durs.append(int(parts[2]))
    if not durs:
        return {"n": 0}
    durs.sort()

    def p(q):
        return durs[min(len(durs) - 1, int(q / 100 * len(durs)))]
    return {"n": len(durs), "p50_us": p(50), "p90_us": p(90), "p99_us": p(99),
            "max_us": durs[-1], "mean_us": round(sum(durs) / len(durs), 1), "non2xx": bad}


# ---- environment -------------------------------------------------------------

def _first_line(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    out = (p.stdout + p.stderr).strip().splitlines()
    return out[0].strip() if out else None


def versions(h2splitd=None):
    v = {"kernel": platform.release(),
         "h2load": _first_line(["h2load", "--version"]),
         "nghttpx": _first_line(["nghttpx", "--version"]),
         "haproxy": _first_line(["haproxy", "-v"]),
         "nginx": _first_line(["nginx", "-v"]),
         "gcc": _first_line(["gcc", "--version"])}
    if h2splitd:
        v["h2splitd"] = _first_line([h2splitd, "--version"])
    try:
        v["git"] = subprocess.run(["git", "-C", REPO_DIR, "describe", "--always", "--dirty"],
                                  capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        v["git"] = None
    return v


def machine():
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
            cpu = m.group(1).strip() if m else None
    except OSError:
        pass
    try:
        with open("/etc/debian_version") as f:
            debian = f.read().strip()
    except OSError:
        debian = None
    with open("/proc/meminfo") as f:
        mem_kib = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
    return {"cpu": cpu, "cpus": os.cpu_count(), "mem_gib": round(mem_kib / 2**20, 1),
            "debian": debian, "loadavg_start": loadavg()}


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def have(tool):
    return shutil.which(tool) is not None


def wait_log(proc, pattern, timeout):
    """Wait until ``proc``'s log file has a line matching ``pattern`` (for
    processes whose output is not watched, so nothing reads it while we load)."""
    rx = re.compile(pattern)

    def seen():
        if proc.poll() is not None:
            raise testbed.StopWaiting(f"{proc.name} exited ({proc.returncode})\n"
                                      f"{proc.log_tail()}")
        with open(proc.log_path, errors="replace") as f:
            return any(rx.search(line) for line in f)
    return testbed.wait_for(seen, timeout, f"{proc.name} to log {pattern!r}")
