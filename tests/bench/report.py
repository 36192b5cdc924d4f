# SPDX-License-Identifier: Apache-2.0
"""Turn a benchmark results file into figures, docs/benchmarks.md and charts.

``summarize(results)`` derives every headline figure (the same keys in smoke
and full runs, so the smoke test can check they are all there);
``write_docs(results, dir)`` writes benchmarks.md and bench-*.png (gnuplot).
``python3 report.py RESULTS.json DOCS_DIR`` re-renders without re-measuring.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

TARGETS = ("direct", "h2split", "nghttpx", "haproxy", "nginx")
PROXIES = ("h2split", "nghttpx", "haproxy", "nginx")
PEERS = ("nghttpx", "haproxy", "nginx")

GOALS = {  # key -> (description, bound, "min" | "max"); issue 25's targets, then earlier ones
    "throughput_vs_nghttpx_4x32": ("throughput, 10 B, 4x32: h2split / nghttpx", 1.5, "min"),
    "throughput_vs_nghttpx_1x1": ("throughput, 10 B, 1x1: h2split / nghttpx", 1.5, "min"),
    "efficiency_vs_nghttpx": ("requests per proxy CPU-second, 10 B: h2split / nghttpx", 2.0,
                              "min"),
    "efficiency_vs_nghttpx_large": ("requests per proxy CPU-second, 64 KiB: h2split / nghttpx",
                                    2.0, "min"),
    "added_p50_us_1x1": ("added latency over direct, 1x1, p50 (us)", 25, "max"),
    "inflight_kib_per_stream": ("RSS per in-flight 10 B stream (KiB)", 4, "max"),
    "idle_kib_per_conn": ("RSS per idle downstream connection (KiB)", 12, "max"),
    "new_conns_vs_nghttpx": ("new connections per second (preface + SETTINGS + first RPC): "
                             "h2split / nghttpx", 1.5, "min"),
    "throughput_vs_haproxy": ("throughput, small unary (10 B): h2split / HAProxy", 1.5, "min"),
    "efficiency_vs_haproxy": ("requests per proxy CPU-second, 10 B: h2split / HAProxy", 1.5,
                              "min"),
    "redirected_connect_vs_plain": ("redirected connect / plain ClusterIP connect (p50)",
                                    1.2, "max"),
    "calls_cost_pct": ("cost of the caller and method series, requests per proxy CPU-second, "
                       "10 B 4x32 (%)", 3, "max"),
}


P99_GOAL = 0.7  # p99 at equal offered load, h2split / nghttpx, at every shape measured

MEDIAN_KEYS = ("req_s", "p50_us", "p90_us", "p99_us", "max_us", "mean_us", "cpu_s_per_10k",
               "cpu_sys_s_per_10k",
               "upstream_conns", "succeeded", "cpu_util")


def _ok(r):
    return "error" not in r and r.get("req_s")


def _median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def aggregate(runs):
    """One record per (kind, target, conns, streams, payload): the median of each
    figure over the repetitions that succeeded; backend counts summed; ``reps``
    and ``failed_reps`` say how many there were. All failed: the first error."""
    groups = {}
    for r in runs:
        groups.setdefault((r["kind"], r["target"], r["conns"], r["streams"], r["payload"]),
                          []).append(r)
    out = []
    for (kind, target, conns, streams, payload), rs in groups.items():
        good = [r for r in rs if _ok(r)]
        a = {"kind": kind, "target": target, "conns": conns, "streams": streams,
             "payload": payload, "reps": len(rs), "failed_reps": len(rs) - len(good)}
        for k in ("offered_rps", "rate_reference"):
            if k in rs[0]:
                a[k] = rs[0][k]
        if not good:
            a["error"] = rs[0].get("error", "no result")
            out.append(a)
            continue
        for k in MEDIAN_KEYS:
            vals = [r[k] for r in good if r.get(k) is not None]
            if vals:
                a[k] = _median(vals)
        a["backend_requests"] = [sum(x) for x in zip(*(r["backend_requests"] for r in good))]
        out.append(a)
    return out


def _closed(results, kind="closed", **kw):
    return [r for r in aggregate(results["runs"]) if r["kind"] == kind and _ok(r)
            and all(r[k] == v for k, v in kw.items())]


def _ratio(a, b, nd=3):
    return round(a / b, nd) if a and b else None


def summarize(results):
    s = {}
    runs = results.get("runs", [])
    payloads = sorted({r["payload"] for r in runs})
    small = payloads[0] if payloads else None
    s["small_payload"] = small

    # Throughput: best req/s over the connection sweep at the smallest payload.
    best = {}
    for t in TARGETS:
        v = [r["req_s"] for r in _closed(results, target=t, payload=small)]
        if v:
            best[t] = max(v)
    s["throughput_small_best_req_s"] = best
    s["throughput_vs_nghttpx"] = _ratio(best.get("h2split"), best.get("nghttpx"))
    s["throughput_vs_haproxy"] = _ratio(best.get("h2split"), best.get("haproxy"))
    s["throughput_vs_nginx"] = _ratio(best.get("h2split"), best.get("nginx"))
    s["throughput_vs_direct"] = _ratio(best.get("h2split"), best.get("direct"))
    # The same ratio at the two shapes issue 25 names (not the best of the sweep).
    for c, m in ((4, 32), (1, 1)):
        rs = {r["target"]: r["req_s"] for r in _closed(results, payload=small, conns=c,
                                                        streams=m)}
        s[f"throughput_vs_nghttpx_{c}x{m}"] = _ratio(rs.get("h2split"), rs.get("nghttpx"))

    # Latency at equal offered load: every fixed-rate shape is a goal of its
    # own, named by its shape; the first one is also the headline figure.
    rc = results.get("rate_configs") or []
    s["p99_equal_load_us"] = {}
    s["p99_equal_load_by_shape"] = {}
    for i, (c, m) in enumerate(rc):
        p99 = {r["target"]: r["p99_us"] for r in _closed(results, kind="rate", conns=c,
                                                         streams=m)}
        s["p99_equal_load_by_shape"][f"{c}x{m}"] = _ratio(p99.get("h2split"), p99.get("nghttpx"))
        if i == 0:
            s["rate_config"] = f"{c}x{m}"
            s["p99_equal_load_us"] = p99
            s["offered_rps"] = next((r["offered_rps"] for r in _closed(
                results, kind="rate", conns=c, streams=m)), None)
    s["p99_equal_load_vs_nghttpx"] = s["p99_equal_load_by_shape"].get(s.get("rate_config"))

    # Added latency at 1x1: p50 over direct's p50.
    p50 = {r["target"]: r["p50_us"] for r in _closed(results, conns=1, streams=1,
                                                      payload=small)}
    s["p50_1x1_us"] = p50
    s["added_p50_us_1x1_all"] = {t: p50[t] - p50["direct"] for t in PROXIES
                                 if t in p50 and "direct" in p50}
    s["added_p50_us_1x1"] = s["added_p50_us_1x1_all"].get("h2split")

    # CPU per 10k requests: mean over the sweep at the smallest payload.
    cpu = {}
    for t in PROXIES:
        v = [r["cpu_s_per_10k"] for r in _closed(results, target=t, payload=small)
             if r.get("cpu_s_per_10k")]
        if v:
            cpu[t] = round(sum(v) / len(v), 4)
    s["cpu_s_per_10k_small"] = cpu
    s["requests_per_cpu_second_small"] = {t: round(1e4 / v) for t, v in cpu.items()}
    s["efficiency_vs_nghttpx"] = _ratio(cpu.get("nghttpx"), cpu.get("h2split"))
    s["efficiency_vs_haproxy"] = _ratio(cpu.get("haproxy"), cpu.get("h2split"))
    s["efficiency_vs_nginx"] = _ratio(cpu.get("nginx"), cpu.get("h2split"))
    large = payloads[-1] if len(payloads) > 1 else None
    cpu_large = {}
    for t in PROXIES:
        v = [r["cpu_s_per_10k"] for r in _closed(results, target=t, payload=large)
             if large and r.get("cpu_s_per_10k")]
        if v:
            cpu_large[t] = round(sum(v) / len(v), 4)
    s["large_payload"] = large
    s["cpu_s_per_10k_large"] = cpu_large
    s["efficiency_vs_nghttpx_large"] = _ratio(cpu_large.get("nghttpx"), cpu_large.get("h2split"))

    s["peak_rss_mib"] = {t: round(v / 1024, 1) for t, v in
                         (results.get("peak_rss_kib") or {}).items() if v}
    idle = results.get("idle") or {}
    s["idle_kib_per_conn_all"] = {t: v["kib_per_conn"] for t, v in idle.items()
                                  if "kib_per_conn" in v}
    s["idle_kib_per_conn"] = s["idle_kib_per_conn_all"].get("h2split")
    inflight = results.get("inflight") or {}
    s["inflight_kib_per_stream_all"] = {t: v["kib_per_stream"] for t, v in inflight.items()
                                        if "kib_per_stream" in v and "error" not in v}
    s["inflight_kib_per_stream"] = s["inflight_kib_per_stream_all"].get("h2split")

    # Balance: per-backend share of everything a proxy sent in the sweep.
    bal = {}
    for t in PROXIES:
        tot = [0, 0, 0]
        for r in _closed(results, target=t):
            tot = [a + b for a, b in zip(tot, r["backend_requests"])]
        if sum(tot):
            mean = sum(tot) / 3
            bal[t] = {"shares": [round(x / sum(tot), 4) for x in tot],
                      "spread": round((max(tot) - min(tot)) / mean, 4)}
    s["balance"] = bal

    cc = results.get("connect") or {}
    if cc.get("redirected") and cc.get("detached"):
        s["connect_us"] = {k: {"p50": v["total_p50_us"], "mean": v["total_mean_us"]}
                           for k, v in cc.items()}
        s["redirected_connect_vs_plain"] = cc["redirected"]["ratio_p50_vs_plain"]
        s["redirected_connect_vs_plain_mean"] = cc["redirected"]["ratio_mean_vs_plain"]
        s["passed_connect_vs_plain"] = cc["passed"]["ratio_p50_vs_plain"]

    s["calls_cost_pct"] = (results.get("calls_cost") or {}).get("cost_per_cpu_s_pct")

    # New connections: conns/s (higher is better) and proxy CPU per new
    # connection (h2split / nghttpx: lower is better), medians of the rounds.
    nc = results.get("new_conns") or {}
    s["new_conns_s"] = {t: v["conns_s"] for t, v in nc.items()}
    s["new_conns_cpu_us_per_conn"] = {t: v["cpu_us_per_conn"] for t, v in nc.items()
                                      if v.get("cpu_us_per_conn")}
    s["new_conns_vs_nghttpx"] = _ratio(s["new_conns_s"].get("h2split"),
                                       s["new_conns_s"].get("nghttpx"))
    s["new_conns_cpu_vs_nghttpx"] = _ratio(s["new_conns_cpu_us_per_conn"].get("h2split"),
                                           s["new_conns_cpu_us_per_conn"].get("nghttpx"))

    s["errors"] = [f"{r['kind']} {r['target']} {r['conns']}x{r['streams']} "
                   f"{r['payload']}B: {r['error'][:400]}" for r in runs if "error" in r]
    s["goals"] = {}
    goals = dict(GOALS)
    for shape in s["p99_equal_load_by_shape"]:
        goals[f"p99_equal_load_vs_nghttpx_{shape}"] = (
            f"p99 latency at equal offered load, {shape} (conns x streams): h2split / nghttpx",
            P99_GOAL, "max")
        s[f"p99_equal_load_vs_nghttpx_{shape}"] = s["p99_equal_load_by_shape"][shape]
    for key, (desc, bound, how) in goals.items():
        v = s.get(key)
        met = None if v is None else (v >= bound if how == "min" else v <= bound)
        s["goals"][key] = {"what": desc, "measured": v, "goal": bound, "met": met,
                           "goal_text": ("≥ " if how == "min" else "≤ ") + f"{bound:g}"}
    return s


# ---- charts --------------------------------------------------------------------

def _gnuplot(script, cwd):
    p = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True, cwd=cwd,
                       timeout=60, errors="replace")
    if p.returncode:
        raise RuntimeError(f"gnuplot failed: {p.stderr}")


def _present(results, kind="closed"):
    seen = {r["target"] for r in _closed(results, kind=kind)}
    return [t for t in TARGETS if t in seen]


COMMON = """set terminal pngcairo size {w},{h} font 'Sans,10'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key outside bottom center horizontal
set yrange [0:*]
"""


def charts(results, out_dir):
    made = []
    if not shutil.which("gnuplot"):
        return made
    tmp = tempfile.mkdtemp(prefix="h2bench-plot-")
    try:
        made += _chart_throughput(results, out_dir, tmp)
        made += _chart_latency(results, out_dir, tmp)
        made += _chart_cpu(results, out_dir, tmp)
        made += _chart_connect(results, out_dir, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return made


def _table_file(path, rows, cols, value):
    with open(path, "w") as f:
        f.write("x " + " ".join(cols) + "\n")
        for row in rows:
            vals = [value(row, c) for c in cols]
            f.write(f'"{row}" ' + " ".join("NaN" if v is None else f"{v:g}" for v in vals)
                    + "\n")


COLORS = {"direct": "#9a9a9a", "h2split": "#2a9d8f", "nghttpx": "#4c78a8",
          "haproxy": "#f58518", "nginx": "#e45756", "p50": "#4c78a8", "mean": "#f58518"}


def _plots(cols):
    """Plot clauses for data columns 2.. named ``cols``, each target in its own colour;
    the first clause leaves out the file name, the caller puts it in front."""
    return ", ".join(f"'' using {i + 2}:xtic(1) title columnheader({i + 2}) "
                     f"lc rgb '{COLORS.get(c, '#777777')}'" for i, c in enumerate(cols))[3:]


def _chart_throughput(results, out_dir, tmp):
    targets = _present(results)
    payloads = sorted({r["payload"] for r in results["runs"] if r["kind"] == "closed"})
    confs = results["params"]["conns"]
    if not targets or not payloads:
        return []
    script = COMMON.format(w=420 * len(payloads), h=380)
    out = os.path.join(out_dir, "bench-throughput.png")
    script += f"set output '{out}'\nset multiplot layout 1,{len(payloads)} " \
              "title 'closed-loop throughput (req/s), connections x streams'\n"
    for p in payloads:
        dat = os.path.join(tmp, f"tput-{p}.dat")

        def val(row, col, p=p):
            c, m = map(int, row.split("x"))
            v = [r["req_s"] for r in _closed(results, target=col, conns=c, streams=m,
                                               payload=p)]
            return v[0] if v else None
        _table_file(dat, [f"{c}x{m}" for c, m in confs], targets, val)
        script += f"set title '{_size(p)} payload'\nplot '{dat}' {_plots(targets)}\n"
    script += "unset multiplot\n"
    _gnuplot(script, tmp)
    return [out]


def _chart_latency(results, out_dir, tmp):
    rc = results.get("rate_configs") or []
    if not rc:
        return []
    c, m = rc[0]
    runs = {r["target"]: r for r in _closed(results, kind="rate", conns=c, streams=m)}
    targets = [t for t in TARGETS if t in runs]
    if not targets:
        return []
    dat = os.path.join(tmp, "lat.dat")
    _table_file(dat, ["p50", "p90", "p99"], targets,
                lambda row, col: runs[col][f"{row}_us"])
    out = os.path.join(out_dir, "bench-latency.png")
    offered = next(iter(runs.values()))["offered_rps"]
    script = COMMON.format(w=640, h=380) + f"""set output '{out}'
set title 'request latency (us) at equal offered load: {offered:.0f} req/s, {c}x{m}, 10 B'
set logscale y
set yrange [*:*]
plot '{dat}' {_plots(targets)}
"""
    _gnuplot(script, tmp)
    return [out]


def _chart_cpu(results, out_dir, tmp):
    targets = [t for t in _present(results) if t != "direct"]
    payloads = sorted({r["payload"] for r in results["runs"] if r["kind"] == "closed"})
    if not targets:
        return []
    dat = os.path.join(tmp, "cpu.dat")

    def val(row, col):
        p = {_size(x): x for x in payloads}[row]
        v = [r["cpu_s_per_10k"] for r in _closed(results, target=col, payload=p)
             if r.get("cpu_s_per_10k")]
        return round(sum(v) / len(v), 4) if v else None
    _table_file(dat, [_size(p) for p in payloads], targets, val)
    out = os.path.join(out_dir, "bench-cpu.png")
    script = COMMON.format(w=640, h=380) + f"""set output '{out}'
set title 'proxy CPU seconds per 10k requests (mean over the connection sweep)'
plot '{dat}' {_plots(targets)}
"""
    _gnuplot(script, tmp)
    return [out]


def _chart_connect(results, out_dir, tmp):
    cc = results.get("connect") or {}
    if not cc:
        return []
    dat = os.path.join(tmp, "conn.dat")
    cases = [c for c in ("none", "detached", "passed", "redirected") if c in cc]
    _table_file(dat, cases, ["p50", "mean"],
                lambda row, col: cc[row][f"total_{col}_us"])
    out = os.path.join(out_dir, "bench-connect.png")
    script = COMMON.format(w=560, h=360) + f"""set output '{out}'
set title 'connect()+close() to a ClusterIP (us)'
plot '{dat}' {_plots(["p50", "mean"])}
"""
    _gnuplot(script, tmp)
    return [out]


# ---- markdown ------------------------------------------------------------------

def _size(p):
    return f"{p // 1024} KiB" if p >= 1024 and p % 1024 == 0 else f"{p} B"


def _f(v, nd=1):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}"


def _x(v):
    return "—" if v is None else f"{v:.2f}x"


def _met(g):
    return {True: "**met**", False: "**not met**", None: "not measured"}[g["met"]]


def render(results, chart_names=()):
    s = results["summary"]
    m, v, prm = results["machine"], results["versions"], results["params"]
    runs = results["runs"]
    targets = _present(results)
    L = []
    w = L.append
    w("# h2split benchmarks\n")
    w("Generated by `make bench` (tests/bench/h2bench.py) on "
      f"{results['started']}; do not edit by hand, re-run it. "
      f"Mode: **{results['mode']}**, {results['elapsed_s']:.0f} s.\n")
    w("Targets from the issues, with the ratio measured in this run:\n")
    w("| target | goal | measured | |")
    w("|---|---|---|---|")
    for key, g in s["goals"].items():
        val = g["measured"]
        shown = "—" if val is None else (f"{val:g} us" if key == "added_p50_us_1x1" else
                                         f"{val:g} KiB" if key in ("idle_kib_per_conn",
                                                                    "inflight_kib_per_stream") else
                                         f"{val:g} %" if key == "calls_cost_pct" else
                                         f"{val:.2f}x")
        w(f"| {g['what']} | {g['goal_text']} | {shown} | {_met(g)} |")
    w("")
    w("How to read the throughput rows: client (h2load), the three backends, the proxy and "
      "the kernel's networking all share this machine's "
      f"{m['cpus']} CPUs, so closed-loop req/s is what the whole machine sustains with that "
      "proxy in the path, and the proxy is often not the one saturated (see its CPU use "
      "below). Requests per proxy CPU-second (utime+stime of the proxy's process tree) is "
      "the proxy's own cost, the figure that carries over to a node where the proxy has "
      "a core to itself.\n")
    if s["errors"] or results.get("notes"):
        w("**Problems seen in this run** (they are part of the result):\n")
        for e in s["errors"]:
            w(f"- `{e.splitlines()[0]}`")
        for n in results.get("notes", []):
            w(f"- {n.splitlines()[0]}")
        w("")
    dl = (results.get("daemon_log") or {}).get("warn_error_lines")
    if dl:
        w("h2splitd logged these warnings/errors during the run (count, level, message):\n")
        for k, n in sorted(dl.items(), key=lambda kv: -kv[1]):
            w(f"- {n} x `{k}`")
        w("")
    w("## Machine and versions\n")
    w(f"- CPU: {m['cpu']}, {m['cpus']} CPUs, {m['mem_gib']} GiB; Debian {m['debian']}, "
      f"kernel {v['kernel']}")
    w(f"- load average at start {m['loadavg_start']}, at end {m.get('loadavg_end')} "
      "(the machine is shared; everything, client and backends included, runs on these "
      "CPUs, so absolute numbers move between runs; the ratios of interleaved runs are "
      "the figures to read)")
    for k in ("h2splitd", "git", "h2load", "nghttpx", "haproxy", "nginx", "gcc"):
        if v.get(k):
            w(f"- {k}: `{v[k]}`")
    w(f"- workers: {prm['workers']} for h2splitd and every peer; backend threads per pod: "
      f"{prm['backend_threads']}; h2splitd --lb-policy: {prm['lb_policy'] or 'default'}")
    w("")
    for c in chart_names:
        w(f"![{c}]({c})")
    w("")

    cc = results.get("connect")
    if cc:
        w("## Connect cost of the eBPF redirect\n")
        w(f"`connect()+close()` from a client pod to a ClusterIP, {prm['connect_count']:,} "
          f"per case, interleaved in {prm['connect_rounds']} round(s) "
          "(tests/bench/connect_loop.c, CLOCK_MONOTONIC around each call). Cases: "
          "**none**: before h2splitd ever ran, no program attached; **detached**: same pod "
          "netns, but run from a cgroup outside the attached one (the plain-connect "
          "baseline, measured alongside the others); **passed**: programs run, Service "
          "not opted in, kube-proxy DNAT; **redirected**: opted-in Service, connect "
          "completes at h2splitd.\n")
        w("| case | connects | connect() p50 us | connect() p99 us | connect+close p50 us "
          "| connect+close mean us | p50 / detached | mean / detached |")
        w("|---|---|---|---|---|---|---|---|")
        for k, r in cc.items():
            w(f"| {k} | {r['count']:,} | {r['connect_p50_us']:.1f} | {r['connect_p99_us']:.1f} "
              f"| {r['total_p50_us']:.1f} | {r['total_mean_us']:.1f} "
              f"| {_x(r.get('ratio_p50_vs_plain'))} | {_x(r.get('ratio_mean_vs_plain'))} |")
        w("\nA redirected connect ends one hop earlier (at the node, no DNAT, no backend "
          "pod), which is why it can be cheaper than a plain one.\n")

    payloads = sorted({r["payload"] for r in runs if r["kind"] == "closed"})
    w("## Closed-loop throughput and latency\n")
    w(f"h2load -D {prm['duration']:g}s after --warm-up-time {prm['warmup']:g}s, one "
      "thread, from a client pod; req/s counts succeeded requests in the measured window. "
      "Latency percentiles come from h2load's per-request --log-file. Each figure is the "
      f"median of {prm.get('repeat', 1)} run(s); the targets take turns run by run.\n")
    for p in payloads:
        w(f"### {_size(p)} payload\n")
        w("| conns x streams | " + " | ".join(f"{t} req/s" for t in targets) +
          " | h2split / nghttpx | h2split / haproxy | h2split / nginx |")
        w("|---|" + "---|" * (len(targets) + 3))
        for c, mm in prm["conns"]:
            row = {r["target"]: r for r in _closed(results, conns=c, streams=mm, payload=p)}
            cells = [_f(row[t]["req_s"], 0) if t in row else "err" for t in targets]
            h = row.get("h2split", {}).get("req_s")
            ratios = [_x(_ratio(h, row.get(t, {}).get("req_s"))) for t in PEERS]
            w(f"| {c}x{mm} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
        w("")
        w("| conns x streams | " + " | ".join(f"{t} p50 / p90 / p99 us" for t in targets) +
          " |")
        w("|---|" + "---|" * len(targets))
        for c, mm in prm["conns"]:
            row = {r["target"]: r for r in _closed(results, conns=c, streams=mm, payload=p)}
            cells = [f"{row[t]['p50_us']:,} / {row[t]['p90_us']:,} / {row[t]['p99_us']:,}"
                     if t in row else "err" for t in targets]
            w(f"| {c}x{mm} | " + " | ".join(cells) + " |")
        w("")

    rate = [r for r in aggregate(runs) if r["kind"] == "rate"]
    if rate:
        w("## Latency at equal offered load\n")
        w("h2load --rps at 50% of nghttpx's closed-loop maximum for the same connections x "
          f"streams and the {_size(payloads[0]) if payloads else ''} payload.\n")
        w(f"Medians of {prm.get('rate_repeat', prm.get('repeat', 1))} repetitions; the last "
          "column lists every repetition's p99, to "
          "show how much a shared 2-CPU machine moves a tail percentile.\n")
        w("| conns x streams | offered req/s | target | achieved req/s | p50 us | p90 us "
          "| p99 us | max us | p99 / nghttpx | p99 of each run, ms |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for c, mm in results.get("rate_configs", []):
            rr = {r["target"]: r for r in rate if (r["conns"], r["streams"]) == (c, mm)}
            ref = rr.get("nghttpx", {}).get("p99_us")
            for t in TARGETS:
                r = rr.get(t)
                if not r:
                    continue
                if not _ok(r):
                    w(f"| {c}x{mm} | {_f(r.get('offered_rps'), 0)} | {t} | error | | | | | | |")
                    continue
                each = ", ".join(f"{x['p99_us'] / 1000:.1f}" for x in runs if x["kind"] == "rate"
                                 and x["target"] == t and (x["conns"], x["streams"]) == (c, mm)
                                 and _ok(x))
                w(f"| {c}x{mm} | {_f(r['offered_rps'], 0)} | {t} | {_f(r['req_s'], 0)} | "
                  f"{r['p50_us']:,} | {r['p90_us']:,} | {r['p99_us']:,} | {r['max_us']:,} | "
                  f"{_x(_ratio(r['p99_us'], ref))} | {each} |")
        w("")

    w("## CPU and memory\n")
    w("CPU: utime+stime of the proxy's whole process tree (/proc/PID/stat) over a run, "
      "divided by the requests the backends counted in it, x 10,000; mean over the "
      "connection sweep. Peak RSS: the highest summed VmRSS of the tree, sampled every "
      "0.2 s during the sweep. Idle: the tree's RSS growth while the client pod holds "
      f"{prm['idle_conns']:,} idle h2 connections (each did one call first), divided by "
      "that number; kernel socket memory is not in RSS. (Not 10,000: the fd limit of "
      "every process here is 20,000 and cannot be raised, and HAProxy reserves two fds per "
      "connection up to its maxconn.) In flight: the backends hold every answer a few "
      "seconds, h2load opens connections x streams 10 B gRPC requests at once through the "
      "proxy; once the backends have counted all of them (each is then open on both of the "
      "proxy's sides), the tree's RSS growth divided by their number. Every proxy is "
      "restarted before the in-flight test and before the load sweep.\n")
    pr = [t for t in PROXIES if t in targets]
    w("| | " + " | ".join(pr) + " |")
    w("|---|" + "---|" * len(pr))
    for p in payloads:
        cells = []
        for t in pr:
            vals = [r["cpu_s_per_10k"] for r in _closed(results, target=t, payload=p)
                    if r.get("cpu_s_per_10k")]
            cells.append(f"{sum(vals) / len(vals):.3f}" if vals else "—")
        w(f"| CPU s / 10k requests, {_size(p)} | " + " | ".join(cells) + " |")
    cells = []
    for t in pr:
        vals = [r["upstream_conns"] for r in _closed(results, target=t)
                if r.get("upstream_conns") is not None]
        cells.append(f"{_median(vals):,.0f} (max {max(vals):,})" if vals else "—")
    w("| upstream connections opened per run, median over the sweep | " + " | ".join(cells)
      + " |")
    cells = []
    for t in pr:
        best = sorted(_closed(results, target=t, payload=payloads[0]) if payloads else [],
                      key=lambda r: r["req_s"])
        cells.append(f"{best[-1]['cpu_util'] * 100:.0f}% at {best[-1]['conns']}x"
                     f"{best[-1]['streams']}" if best and best[-1].get("cpu_util") else "—")
    w("| CPU use in its best closed-loop 10 B run, % of one CPU | " + " | ".join(cells) + " |")
    w("| requests per proxy CPU-second, 10 B | " + " | ".join(
        _f(s["requests_per_cpu_second_small"].get(t), 0) for t in pr) + " |")
    idle = results.get("idle") or {}
    start = results.get("rss_at_sweep_start_kib") or {}
    w("| RSS before the idle test, MiB | " + " | ".join(
        _f(round(idle[t]["rss_before_kib"] / 1024, 1)) if "rss_before_kib" in idle.get(t, {})
        else "—" for t in pr) + " |")
    w(f"| RSS holding {prm['idle_conns']:,} idle connections, MiB | " + " | ".join(
        _f(round(idle[t]["rss_after_kib"] / 1024, 1)) if "rss_after_kib" in idle.get(t, {})
        else "—" for t in pr) + " |")
    w("| RSS after they closed, MiB | " + " | ".join(
        _f(round(idle[t]["rss_after_close_kib"] / 1024, 1))
        if idle.get(t, {}).get("rss_after_close_kib") else "—" for t in pr) + " |")
    w("| RSS at the start of the load sweep, MiB | " + " | ".join(
        _f(round(start[t] / 1024, 1)) if start.get(t) else "—" for t in pr) + " |")
    w("| peak RSS during the load sweep, MiB | " +
      " | ".join(_f(s["peak_rss_mib"].get(t)) for t in pr) + " |")
    w("| RSS per idle downstream connection, KiB | " +
      " | ".join(_f(idle[t].get("kib_per_conn"), 2) if t in idle and "kib_per_conn" in idle[t]
                 else "err" if t in idle else "—" for t in pr) + " |")
    inflight = results.get("inflight") or {}
    shape = next((f"{v['conns']}x{v['streams']}" for v in inflight.values()), None)
    if shape:
        w(f"| RSS per stream in flight ({shape} 10 B requests held open), KiB | " + " | ".join(
            _f(s["inflight_kib_per_stream_all"].get(t), 2)
            if t in s["inflight_kib_per_stream_all"] else "err" if t in inflight else "—"
            for t in pr) + " |")
    w("")
    cpu_by_shape(results, w, payloads, pr)

    new_conns(results, w)

    calls = results.get("calls_cost")
    if calls:
        w("## Cost of the caller and method series\n")
        w(f"The {_size(calls['payload'])} {calls['shape']} closed-loop run through h2splitd, "
          f"{calls['rounds']} rounds alternating a daemon with the per-caller and per-method "
          "series on (the defaults) and one with them off (`--max-callers-per-service 0 "
          "--max-methods-per-service 0`), a fresh daemon each run; medians, with every "
          "round's figure so the spread shows.\n")
        w("| series | req/s | requests per proxy CPU-second | rounds (req per CPU-s) |")
        w("|---|---|---|---|")
        for v in ("on", "off"):
            if v in calls:
                each = ", ".join(f"{r['req_per_cpu_s']:,.0f}" for r in calls["runs"][v])
                w(f"| {v} | {_f(calls[v]['req_s'], 0)} | {_f(calls[v]['req_per_cpu_s'], 0)} | "
                  f"{each} |")
        if calls.get("cost_per_cpu_s_pct") is not None:
            w(f"\nCost (1 - on / off, requests per proxy CPU-second): "
              f"**{calls['cost_per_cpu_s_pct']:g} %**.\n")
        else:
            w("")

    hot_path(results, w)

    w("## Balance over the three backend pods\n")
    w("Share of all requests of the closed-loop sweep each backend pod counted itself "
      "(grpc_backend's /stats); spread = (max - min) / mean.\n")
    w("| proxy | be-0 | be-1 | be-2 | spread |")
    w("|---|---|---|---|---|")
    for t, b in s["balance"].items():
        w(f"| {t} | " + " | ".join(f"{x * 100:.1f}%" for x in b["shares"]) +
          f" | {b['spread']:.3f} |")
    w("")

    w("## How it was run\n")
    w("```")
    w("make bench                          # full run, rewrites this file and docs/bench-*.png")
    w("make bench BENCH_ARGS=--smoke       # seconds; writes build/bench/results-smoke.json only")
    w("/usr/bin/python3 tests/bench/connect_cost.py --count 20000   # connect cost alone")
    w("/usr/bin/python3 tests/bench/report.py build/bench/results.json docs   # re-render\n```\n")
    w("Needs: h2load (nghttp2-client), nghttpx (nghttp2-proxy), haproxy, nginx with "
      "http_v2 and grpc (Debian's nginx-light has both), gnuplot-nox; a peer that is not "
      "installed is left out and named under the problems above.\n")
    w("Simulated node: tests/testbed (pods are netns + cgroup, Calico-style /32 routes, "
      "kube-proxy-shaped iptables DNAT). Backends: 3 pods. Client: 1 pod.\n")
    w("Load (one run; URL per target below):\n")
    w("```\nh2load -D <s> --warm-up-time <s> -c <conns> -m <streams> -t 1 -d <msg.bin> "
      "-H 'content-type: application/grpc' -H 'te: trailers' "
      "[--rps <per-conn>] --log-file <file> <url>\n```\n")
    w("`msg.bin` is a gRPC message: 1 flag byte, 4-byte big-endian length, payload.\n")
    for t, u in results.get("urls", {}).items():
        w(f"- {t}: `{u}`")
    w("")
    cmds = results.get("commands", {})
    if "backend" in cmds:
        w(f"Backend (each pod): `{cmds['backend']}`\n")
    if "h2splitd" in cmds:
        w(f"h2splitd (node netns): `{cmds['h2splitd']}`\n")
    for t in PEERS:
        c = cmds.get(t)
        if not c:
            continue
        w(f"{t} (node netns): `{' '.join(c['argv'])}`\n")
        if c.get("config"):
            w("```\n" + c["config"].rstrip() + "\n```\n")
    return "\n".join(L) + "\n"


def new_conns(results, w):
    nc = results.get("new_conns")
    if not nc:
        return
    s, prm = results["summary"], results["params"]
    w("## New connections\n")
    w(f"tests/bench/conn_rate.c in the client pod keeps {prm.get('new_conns_concurrency')} "
      "connections in progress; each connects, sends the client preface + SETTINGS and one "
      f"gRPC unary request ({_size(min(prm['payloads']))} message), reads to the response's "
      "END_STREAM (checks :status 200 and grpc-status 0), closes, and a new one starts. "
      f"-D {prm['duration']:g}s after {prm['warmup']:g}s of warm-up, "
      f"{prm.get('new_conns_rounds')} round(s), the targets take turns (the order rotates "
      "each round); medians. Latency is connect to close of one connection. CPU per "
      "connection is the proxy tree's utime+stime over the run divided by the connections "
      "completed in it. The client pod's netns has a wide ip_local_port_range and "
      "tcp_tw_reuse=1 (the client closes first, so TIME_WAIT sits on its side).\n")
    w("| target | new conns/s | p50 us | p90 us | p99 us | proxy CPU us per connection "
      "| proxy CPU use, % of one CPU | rounds (conns/s) |")
    w("|---|---|---|---|---|---|---|---|")
    for t in TARGETS:
        v = nc.get(t)
        if not v:
            continue
        each = ", ".join(f"{r['conns_s']:,.0f}" for r in v.get("rounds", []))
        w(f"| {t} | {_f(v['conns_s'], 0)} | {_f(v['p50_us'], 0)} | {_f(v['p90_us'], 0)} "
          f"| {_f(v['p99_us'], 0)} | {_f(v.get('cpu_us_per_conn'))} "
          f"| {_f(round(100 * v['cpu_util'])) if v.get('cpu_util') is not None else '—'} "
          f"| {each} |")
    w(f"\nh2split / nghttpx: **{_x(s.get('new_conns_vs_nghttpx'))}** new conns/s, "
      f"**{_x(s.get('new_conns_cpu_vs_nghttpx'))}** proxy CPU per connection (lower is "
      "cheaper). A proxy using well under 100 % of a CPU here is not what limits the "
      "rate: the client and the kernel's connection setup, on the same CPUs, are; its CPU "
      "per connection is the figure that carries over.\n")


def _prof_row(w, what, before, after, fmt):
    def cell(v):
        return "—" if v is None else fmt(v)
    change = (f"{(after / before - 1) * 100:+.0f}%" if before and after is not None
              else "—")
    w(f"| {what} | {cell(before)} | {cell(after)} | {change} |")


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def cpu_by_shape(results, w, payloads, pr):
    """Proxy CPU per request at every shape of the closed-loop sweep, with the
    kernel's share: the efficiency goals are means over the sweep, and the
    shapes differ by an order of magnitude in what a request costs."""
    if "h2split" not in pr or "nghttpx" not in pr:
        return
    w("### Proxy CPU per request, by shape\n")
    w("Microseconds of proxy CPU (utime+stime of its process tree) per request the "
      "backends counted, medians of the repetitions; in brackets the part spent in the "
      "kernel (stime: syscalls, and the TCP and veth work of each delivery, which runs "
      "in the sending process's context). The last column is h2split's requests per "
      "CPU-second over nghttpx's.\n")
    w("| payload | conns x streams | h2split us (kernel) | nghttpx us (kernel) | "
      "h2split / nghttpx |")
    w("|---|---|---|---|---|")
    for p in payloads:
        shapes = sorted({(r["conns"], r["streams"]) for r in _closed(results, payload=p)},
                        key=lambda cs: cs[0] * cs[1])
        for c, m in shapes:
            cell, v = {}, {}
            for t in ("h2split", "nghttpx"):
                r = next(iter(_closed(results, target=t, payload=p, conns=c, streams=m)), {})
                tot, sys_ = r.get("cpu_s_per_10k"), r.get("cpu_sys_s_per_10k")
                v[t] = tot
                cell[t] = ("—" if tot is None else f"{tot * 100:.1f}"
                           + ("" if sys_ is None else f" ({sys_ * 100:.1f})"))
            w(f"| {_size(p)} | {c}x{m} | {cell['h2split']} | {cell['nghttpx']} | "
              f"{_x(_ratio(v['nghttpx'], v['h2split']))} |")
    w("")


def hot_path(results, w):
    """The hot path profile (profile.py) and capacity (capacity.py) figures:
    before = tests/bench/profile_baseline.json (the daemon before issue 7's
    work), after = this build's BUILD/bench/profile.json and capacity.json."""
    hp = results.get("hot_path")
    if not hp:
        return
    b, a = hp.get("baseline") or {}, hp.get("profile") or {}
    cb, ca = b.get("capacity") or {}, hp.get("capacity") or {}
    w("## Hot path profile\n")
    prm = a.get("params") or b.get("params") or {}
    w("Counts, not timings, from `make profile` (tests/bench/profile.py): one fixed "
      f"workload, h2load -n {prm.get('requests', 20000):,} -c {prm.get('conns', 4)} "
      f"-m {prm.get('streams', 16)} with a {prm.get('payload', 10)}-byte gRPC message "
      "through the redirect, one worker. Instructions: valgrind --tool=callgrind, "
      "instrumented only during the measured run, total Ir / requests. Mallocs: calls "
      "into malloc/calloc/realloc from outside the allocator / requests (each request is "
      "one downstream and one upstream stream, so this is per proxied stream). Syscalls: "
      "strace -c on every thread for the run / requests; at 4x16 many requests share one "
      "read and one write, so that figure moves with timing; the 1x1 run is the "
      "per-request floor. RSS per stream in flight: `make capacity`, h2splitd's RSS "
      "growth / its downstream_streams_active gauge with every stream open at once "
      "(backends hold each answer). Before issue 7: "
      f"`{b.get('git', '?')}`; now: `{a.get('git', '?')}`.\n")
    r2 = hp.get("baseline_25") or {}
    w("Three builds: *before issue 7* (the first profile), *before issue 25* "
      f"(`{r2.get('git', '?')}`, the second performance round) and *now*; nghttpx "
      "on the same workload, counted the same way (its worker process), for scale. "
      "By library: exclusive instructions by the object they ran in.\n")
    w("| per request | before issue 7 | before issue 25 | now | change (issue 25) "
      "| nghttpx now |")
    w("|---|---|---|---|---|---|")

    def nghttp2(d):
        objs = d.get("ir_per_request_by_object") if isinstance(d, dict) else None
        return next((v for k, v in (objs or {}).items() if k.startswith("libnghttp2")), None)

    def own(d):
        objs = d.get("ir_per_request_by_object") if isinstance(d, dict) else None
        return next((v for k, v in (objs or {}).items()
                     if k.startswith(("h2splitd", "nghttpx"))), None)

    def libc(d):
        objs = d.get("ir_per_request_by_object") if isinstance(d, dict) else None
        return next((v for k, v in (objs or {}).items() if k.startswith("libc.")), None)
    ng, big = a.get("callgrind_nghttpx") or {}, a.get("large") or {}
    big2 = r2.get("large") or {}
    n_big = big.get("payload") or big2.get("payload") or 65536
    rows = [
        ("instructions (callgrind Ir)", lambda d: _get(d, "callgrind", "ir_per_request"),
         ng.get("ir_per_request"), lambda v: f"{v:,}"),
        ("... in libnghttp2", lambda d: nghttp2(d.get("callgrind")), nghttp2(ng),
         lambda v: f"{v:,}"),
        ("... in the proxy's own code", lambda d: own(d.get("callgrind")), own(ng),
         lambda v: f"{v:,}"),
        ("... in libc", lambda d: libc(d.get("callgrind")), libc(ng), lambda v: f"{v:,}"),
        ("mallocs per stream", lambda d: _get(d, "callgrind", "mallocs_per_stream"),
         ng.get("mallocs_per_stream"), lambda v: f"{v:g}"),
        (f"syscalls, {prm.get('conns', 4)}x{prm.get('streams', 16)}",
         lambda d: _get(d, "syscalls", "per_request"), None, lambda v: f"{v:g}"),
        ("syscalls, 1x1", lambda d: _get(d, "syscalls_1x1", "per_request"), None,
         lambda v: f"{v:g}"),
        (f"instructions, {n_big // 1024} KiB message",
         lambda d: _get(d, "large", "callgrind", "ir_per_request"),
         _get(big, "callgrind_nghttpx", "ir_per_request"), lambda v: f"{v:,}"),
        ("... in libc (memcpy: the copies of the body)",
         lambda d: libc(_get(d, "large", "callgrind")), libc(big.get("callgrind_nghttpx")),
         lambda v: f"{v:,}"),
        (f"syscalls, {n_big // 1024} KiB message",
         lambda d: _get(d, "large", "syscalls", "per_request"), None, lambda v: f"{v:g}"),
    ]
    for what, get, peer, fmt in rows:
        vb, v2, va = get(b), get(r2), get(a)

        def cell(v):
            return "—" if v is None else fmt(v)
        change = f"{(va / v2 - 1) * 100:+.0f}%" if v2 and va is not None else "—"
        w(f"| {what} | {cell(vb)} | {cell(v2)} | {cell(va)} | {change} | {cell(peer)} |")
    w(f"| RSS per stream in flight (10,000 at once), KiB | "
      f"{_f(_get(cb, 'streams_small', 'kib_per_stream'), 2)} | — | "
      f"{_f(_get(ca, 'streams_small', 'kib_per_stream'), 2)} | — | — |")
    w("")
    one = _get(a, "syscalls_1x1", "by_syscall_per_request") or {}
    if one:
        w("Syscalls per request at 1x1 after: " + ", ".join(
            f"{k} {v:g}" for k, v in list(one.items())[:6]) + " (one read and one write "
            "per side, one epoll_wait per direction; epoll_ctl only when a socket's "
            "EPOLLOUT interest changes).\n")
    callers = _get(b, "callgrind", "alloc_callers") or []
    req = prm.get("requests", 20000)
    if callers:
        w("Where the mallocs came from before: " + ", ".join(
            f"{fn} {n / req:.2f}" for fn, n in callers[:4]) + " per request (the hex "
          "address is libnghttp2's internal allocator wrapper: stream objects, outbound "
          "items and header copies on both sessions). Removed by pooling stream structs "
          "with their header arenas per worker and giving nghttp2 a per-worker "
          "size-class allocator (userspace/proxy/h2/h2_mem.c); the first body block of a stream is "
          "2 KiB instead of 16 KiB (userspace/proxy/h2/h2_buf.c).\n")
    top = _get(a, "callgrind", "top_functions") or []
    if top:
        w("Top functions after, by exclusive instructions (libnghttp2 has no symbols "
          "here, hence the addresses):\n")
        w("| % of Ir | function |")
        w("|---|---|")
        for t in top[:10]:
            w(f"| {t['pct']:.2f} | `{t['fn']}` |")
        w("")
    if ca:
        idle, st = ca.get("idle") or {}, ca.get("streams") or {}
        w("### Capacity\n")
        w("`make capacity` (tests/bench/capacity.py), one worker, fd hard limit "
          f"{ca.get('fd_hard_limit', '?'):,} per process (h2splitd logs "
          "`fd_limit soft=.. hard=..` at startup after raising its soft limit):\n")
        w("| | before | after |")
        w("|---|---|---|")

        def held(c, k, n_key):
            d = c.get(k) or {}
            if not d:
                return "—"
            if "error" in d:
                return (f"NOT held: at most {d.get(n_key) or 0:,} (" + d["error"][:90] + ")")
            return f"{d.get(n_key, 0):,} held"
        w(f"| {idle.get('conns', 10000):,} idle downstream connections (one call each, "
          "then idle) | " + held(cb, "idle", "open") + " | " + held(ca, "idle", "open")
          + " |")
        w("| RSS per idle downstream connection, KiB | "
          f"{_f(_get(cb, 'idle', 'kib_per_conn'), 2)} | {_f(idle.get('kib_per_conn'), 2)} |")
        w(f"| {st.get('total', 0):,} streams in flight at once ({st.get('conns', 0):,} "
          f"connections x {st.get('streams_per_conn', 0)}) | "
          + held(cb, "streams", "peak_active") + " | " + held(ca, "streams", "peak_active")
          + " |")
        w("| ... of which answered 200 in the end | "
          f"{_f(_get(cb, 'streams', 'succeeded'), 0)} | {_f(st.get('succeeded'), 0)} |")
        w("| ... connections misrouted to the L4 path | "
          f"{_f(_get(cb, 'streams', 'l4_conns'), 0)} | {_f(st.get('l4_conns'), 0)} |")
        w("| RSS per stream in flight (RSS growth / streams the gauge saw), KiB | "
          f"{_f(_get(cb, 'streams', 'kib_per_stream'), 2)} | "
          f"{_f(st.get('kib_per_stream'), 2)} |")
        sb, sa = cb.get("streams_small") or {}, ca.get("streams_small") or {}
        if sb or sa:
            w(f"| RSS per stream in flight, {sa.get('conns', 100)} x "
              f"{sa.get('streams_per_conn', 100)} (no connection goes L4 either way), KiB | "
              f"{_f(sb.get('kib_per_stream'), 2)} | {_f(sa.get('kib_per_stream'), 2)} |")
        w("")
        w("Before, most of the 1,000 h2load connections were handed to the L4 path: "
          "their preface was in the socket, but the 1 s sniff timer fired at the end of "
          "a long loop pass before it was read (userspace/proxy/worker.c now reads once more "
          "on the timeout). Those connections were proxied byte for byte to one backend, "
          "not split, so the streams gauge never saw their streams. The idle figure "
          "rose by about 0.5 KiB per connection, which we put down to h2_mem (not measured "
          "apart): nghttp2's small allocations that live as "
          "long as a session (HPACK tables, settings) now carry h2_mem's 16-byte chunk "
          "header and are rounded up to 64 bytes.\n")
        if cb.get("note"):
            w(cb["note"] + "\n")


def load_hot_path(build_dir):
    """What hot_path() renders: the committed baseline and this build's
    profile.json / capacity.json (make profile, make capacity), when present."""
    here = os.path.dirname(os.path.abspath(__file__))
    out = {}
    for key, path in (("baseline", os.path.join(here, "profile_baseline.json")),
                      ("baseline_25", os.path.join(here, "profile_baseline_25.json")),
                      ("profile", os.path.join(build_dir, "bench", "profile.json")),
                      ("capacity", os.path.join(build_dir, "bench", "capacity.json"))):
        try:
            with open(path) as f:
                out[key] = json.load(f)
        except (OSError, ValueError):
            continue
    return out if "profile" in out or "capacity" in out else None


def write_docs(results, out_dir):
    out_dir = os.path.abspath(out_dir)  # gnuplot runs in a scratch directory
    os.makedirs(out_dir, exist_ok=True)
    made = charts(results, out_dir)
    md = os.path.join(out_dir, "benchmarks.md")
    keep = kept_sections(md)
    with open(md, "w") as f:
        f.write(render(results, [os.path.basename(p) for p in made]) + keep)
    return md


def kept_sections(md):
    """Sections other benchmarks write into benchmarks.md between
    <!-- NAME:begin --> and <!-- NAME:end --> (make bench-scale's), kept."""
    try:
        with open(md) as f:
            text = f.read()
    except OSError:
        return ""
    return "".join("\n" + m.group(0) + "\n" for m in
                   re.finditer(r"<!-- (\w+):begin -->.*?<!-- \1:end -->", text, re.S))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: report.py RESULTS.json DOCS_DIR")
    with open(sys.argv[1]) as fh:
        res = json.load(fh)
    res["summary"] = summarize(res)
    print(write_docs(res, sys.argv[2]))
