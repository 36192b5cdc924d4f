# SPDX-License-Identifier: Apache-2.0
"""Turn a balance benchmark results file into figures, docs/balancing.md and charts.

``summarize(results)`` derives the per scenario x policy figures and checks
issue 9's targets (the same keys in smoke and full runs); ``write_docs(results,
dir)`` writes balancing.md and balance-*.png (gnuplot).
``python3 balance_report.py RESULTS.json DOCS_DIR`` re-renders without re-measuring.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

SCENARIO_TITLES = {
    "equal": "1. Five equal pods",
    "slow": "2. One of five pods 10x slower",
    "failing": "3. One of five pods fails 50% of RPCs fast (UNAVAILABLE)",
    "added": "4. A pod added under load",
    "cold": "5. A cold pod added under load",
    "stall": "6. A pod that stalls (stops reading) mid-run",
    "near_slow": "7. Locality: the near pods 10x slower",
    "near_dead": "8. Locality: the near pods killed, then back",
    "killed": "9. A pod being killed under load, no retry policy",
    "killed_retry": "10. A pod being killed under load, with a retry policy",
}
FIGURES = ("success", "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "spread",
           "fair_share_after_s", "first_rpc_after_s", "new_first2s_p99_us",
           "new_first2s_p50_us", "others_first2s_p99_us", "all_first2s_p99_us",
           "new_share_after", "stalled_failed", "stalled_rpcs", "stalled_success",
           "stalled_p99_us", "failed_after_first_deadline", "last_failed_start_s", "n",
           "hiccup_buckets", "near_share", "near_share_dead", "failed_after_kill",
           "near_share_back", "near_back_after_s")
COLORS = ["#9a9a9a", "#4c78a8", "#2a9d8f", "#f58518", "#e45756", "#b279a2"]


def _median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def aggregate(results):
    """{scenario: {label: record}}: medians over the repetitions that ran, shares
    averaged; the first repetition's timeline and latency curve for the charts."""
    groups = {}
    for r in results["runs"]:
        groups.setdefault(r["scenario"], {}).setdefault(r["policy"], []).append(r)
    out = {}
    for sc, by in groups.items():
        for label, rs in by.items():
            good = [r for r in rs if "error" not in r]
            a = {"reps": len(rs), "failed_reps": len(rs) - len(good)}
            if not good:
                a["error"] = rs[0].get("error", "no result")
            else:
                for k in FIGURES:
                    vals = [r[k] for r in good if r.get(k) is not None]
                    if vals:
                        a[k] = _median(vals)
                pods = list(good[0]["share"])
                a["share"] = {p: round(sum(r["share"][p] for r in good) / len(good), 4)
                              for p in pods}
                a["statuses"] = good[0]["statuses"]
                a["daemon_counters"] = good[0].get("daemon_counters", {})
                a["timeline"] = good[0]["timeline"]
                a["curve"] = good[0]["curve"]
                a["event_s"] = good[0].get("event_s")
                a["fair_share"] = good[0].get("fair_share")
            out.setdefault(sc, {})[label] = a
    return out


def _goal(what, measured, bound, how):
    met = None if measured is None else (measured >= bound if how == "min" else measured <= bound)
    return {"what": what, "measured": measured, "bound": bound, "how": how, "met": met}


def summarize(results):
    agg = aggregate(results)
    labels = [c["label"] for c in results["contenders"]]
    s = {"scenarios": {sc: {lb: {k: v for k, v in rec.items()
                                 if k not in ("timeline", "curve")}
                            for lb, rec in by.items()} for sc, by in agg.items()},
         "errors": [f"{r['scenario']}/{r['policy']}: {r['error']}" for r in results["runs"]
                    if "error" in r]}
    goals = []
    if "equal" in agg:
        for lb in labels:
            goals.append(_goal(f"equal pods, {lb}: spread of per-pod shares (max-min)/mean",
                               agg["equal"].get(lb, {}).get("spread"), 0.05, "max"))
    if "slow" in agg:
        rr = agg["slow"].get("round_robin", {}).get("p99_us")
        ew = agg["slow"].get("ewma", {}).get("p99_us")
        goals.append(_goal("one pod 10x slower: p99 ewma / p99 round_robin",
                           round(ew / rr, 3) if ew and rr else None, 0.5, "max"))
    if "failing" in agg:
        for lb in labels:
            v = agg["failing"].get(lb, {}).get("success")
            goals.append(_goal(f"one pod fails 50%, {lb} with outlier ejection: success rate (%)",
                               round(v * 100, 3) if v is not None else None, 99.5, "min"))
    if "added" in agg:
        for lb in labels:
            rec = agg["added"].get(lb, {})
            g = _goal(f"pod added under load, {lb}: seconds until its share of a "
                      "100 ms bucket reaches 80% of a fair share",
                      rec.get("fair_share_after_s"), 1.0, "max")
            if rec and "error" not in rec and g["measured"] is None:
                g.update(met=False, never=True)  # ran, and never got there
            goals.append(g)
    s["goals"] = goals
    s["recommendation"] = recommend(agg, labels)
    return s


def recommend(agg, labels):
    """Which policy should be the default, from the numbers. ewma is there for
    pods that misbehave, so those scenarios decide: it must meet the slow-pod
    target and have the lowest p99 there, meet the failing-pod target, and fail
    no more RPCs than the best other policy (10% slack) while a pod is stalled.
    Spreading evenly over pods that are alike is the floor every default must
    keep, so the equal-pods spread target decides too. What else it costs
    where pods are alike is reported next to it."""
    pol = [p for p in ("round_robin", "least_request", "ewma") if p in labels]
    if "ewma" not in pol or len(pol) < 2:
        return {"default": None, "text": "ewma and another policy must both run to compare."}
    others = [p for p in pol if p != "ewma"]
    checks = []

    def fig(sc, p, key):
        return agg.get(sc, {}).get(p, {}).get(key)

    def cmp(sc, key, what, deciding, slack=1.0, better="lower"):
        ew, rest = fig(sc, "ewma", key), [fig(sc, p, key) for p in others]
        if ew is None or any(v is None for v in rest):
            return
        best = min(rest) if better == "lower" else max(rest)
        won = ew <= best * slack if better == "lower" else ew >= best * slack
        checks.append({"what": what, "ewma": ew, "best_other": best, "won": won,
                       "deciding": deciding})

    def target(sc, key, what, ok, deciding):
        ew = fig(sc, "ewma", key)
        if ew is not None:
            checks.append({"what": what, "ewma": ew, "best_other": None, "won": ok(ew),
                           "deciding": deciding})
    cmp("slow", "p99_us", "p99 with one slow pod (lowest)", True)
    rr, ew = fig("slow", "round_robin", "p99_us"), fig("slow", "ewma", "p99_us")
    if rr and ew:
        checks.append({"what": "p99 with one slow pod: ewma / round_robin ≤ 0.5",
                       "ewma": round(ew / rr, 3), "best_other": None, "won": ew <= 0.5 * rr,
                       "deciding": True})
    target("failing", "success", "success with one failing pod ≥ 99.5%",
           lambda v: v >= 0.995, True)
    cmp("stall", "stalled_failed", "failed RPCs while a pod is stalled (fewest, 10% slack)",
        True, slack=1.1)
    cmp("failing", "success", "success with one failing pod (highest)", False,
        better="higher")
    cmp("equal", "p99_us", "p99 with equal pods (lowest, 10% slack)", False, slack=1.1)
    cmp("cold", "new_first2s_p99_us", "cold new pod's p99 in its first 2 s (lowest, 10% slack)",
        False, slack=1.1)
    target("equal", "spread", "spread with equal pods ≤ 0.05", lambda v: v <= 0.05, True)
    deciding = [c for c in checks if c["deciding"]]
    ewma_default = len(deciding) == 5 and all(c["won"] for c in deciding)
    lost = [c["what"] for c in checks if not c["won"]]
    text = (f"Compared with {', '.join(others)}. The scenarios where pods misbehave decide "
            f"(slow, failing, stalled), with the spread over equal pods as the floor; ewma passed {sum(c['won'] for c in deciding)} of "
            f"{len(deciding)} of those checks. ")
    if ewma_default:
        text += "It wins the benchmark: ewma can be the default (--lb-policy)."
        if lost:
            text += " Where it lost: " + "; ".join(lost) + " (see the tables)."
    elif len(deciding) < 5:
        text += ("Not every deciding check ran (they need the scenarios slow, failing, stall "
                 "and equal, and round_robin for the slow-pod ratio): no recommendation.")
    else:
        text += "It does not win them all (" + "; ".join(
            c["what"] for c in deciding if not c["won"]) + "): it should not be the default."
    return {"default": "ewma" if ewma_default else None, "checks": checks, "text": text}


# ---- charts ----------------------------------------------------------------------

def _gnuplot(script, cwd):
    p = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True, cwd=cwd,
                       timeout=60, errors="replace")
    if p.returncode:
        raise RuntimeError(f"gnuplot failed: {p.stderr}")


HEAD = "set terminal pngcairo size {w},{h} font 'Sans,10' noenhanced\nset grid\n" \
       "set key outside bottom center horizontal\n"


def _lines(files):
    return ", ".join(f"'{f}' using 1:2 with lines lw 2 lc rgb '{COLORS[i % len(COLORS)]}' "
                     f"title '{lb}'" for i, (lb, f) in enumerate(files))


def charts(results, out_dir):
    if not shutil.which("gnuplot"):
        return []
    agg = aggregate(results)
    labels = [c["label"] for c in results["contenders"]]
    made = []
    tmp = tempfile.mkdtemp(prefix="balance-plot-")
    try:
        for fn in (_chart_p99, _chart_cdf, _chart_added, _chart_stall):
            made += fn(agg, labels, out_dir, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return made


def _chart_p99(agg, labels, out_dir, tmp):
    scen = [sc for sc in SCENARIO_TITLES if sc in agg]
    if not scen:
        return []
    dat = os.path.join(tmp, "p99.dat")
    with open(dat, "w") as f:
        f.write("x " + " ".join(labels) + "\n")
        for sc in scen:
            vals = [agg[sc].get(lb, {}).get("p99_us") for lb in labels]
            f.write(f'"{sc}" ' + " ".join("NaN" if v is None else f"{v / 1000:g}"
                                          for v in vals) + "\n")
    out = os.path.join(out_dir, "balance-p99.png")
    plots = ", ".join(f"'' using {i + 2}:xtic(1) title columnheader({i + 2}) "
                      f"lc rgb '{COLORS[i % len(COLORS)]}'" for i in range(len(labels)))[3:]
    _gnuplot(HEAD.format(w=720, h=380) + f"""set output '{out}'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set logscale y
set ylabel 'p99 latency (ms)'
set title 'p99 RPC latency per scenario (log scale; client deadline caps it)'
plot '{dat}' {plots}
""", tmp)
    return [out]


def _chart_cdf(agg, labels, out_dir, tmp):
    by = agg.get("slow", {})
    files = []
    for lb in labels:
        curve = by.get(lb, {}).get("curve")
        if not curve:
            continue
        dat = os.path.join(tmp, f"cdf-{len(files)}.dat")
        with open(dat, "w") as f:
            for q, v in curve:
                f.write(f"{max(v, 1) / 1000:g} {q:g}\n")
        files.append((lb, dat))
    if not files:
        return []
    out = os.path.join(out_dir, "balance-slow-cdf.png")
    _gnuplot(HEAD.format(w=720, h=420) + f"""set output '{out}'
set logscale x
set xlabel 'latency (ms, log scale)'
set ylabel 'percentile'
set yrange [0:100]
set title 'scenario 2, one pod 10x slower: latency distribution'
plot {_lines(files)}
""", tmp)
    return [out]


def _timeline_files(agg, sc, labels, tmp, value):
    files = []
    for lb in labels:
        rec = agg.get(sc, {}).get(lb, {})
        tl, ev = rec.get("timeline"), rec.get("event_s")
        if not tl or ev is None:
            continue
        dat = os.path.join(tmp, f"{sc}-{len(files)}.dat")
        with open(dat, "w") as f:
            for b in tl:
                v = value(b)
                if v is not None:
                    f.write(f"{b['t_s'] - ev:.1f} {v:g}\n")
        files.append((lb, dat))
    return files


def _chart_added(agg, labels, out_dir, tmp):
    def share(b):
        n = sum(b["pods"].values())
        return b["pods"].get("be-5", 0) / n * 100 if n else None
    files = _timeline_files(agg, "added", labels, tmp, share)
    if not files:
        return []
    fair = next(iter(agg["added"].values())).get("fair_share") or 0.2
    out = os.path.join(out_dir, "balance-added-share.png")
    _gnuplot(HEAD.format(w=760, h=420) + f"""set output '{out}'
set xlabel 'seconds since be-5 joined the Service'
set ylabel 'be-5 share of RPCs per 100 ms (%)'
set xrange [-1:*]
set yrange [0:*]
set arrow from graph 0, first {fair * 100:g} to graph 1, first {fair * 100:g} nohead dt 2 lc rgb '#555555'
set title 'scenario 4: share of the pod added under load (dashed: a fair share)'
plot {_lines(files)}
""", tmp)
    return [out]


def _chart_stall(agg, labels, out_dir, tmp):
    files = _timeline_files(agg, "stall", labels, tmp, lambda b: b["fail"] / b["n"] * 100
                            if b["n"] else None)
    if not files:
        return []
    out = os.path.join(out_dir, "balance-stall.png")
    _gnuplot(HEAD.format(w=760, h=420) + f"""set output '{out}'
set xlabel 'seconds since be-4 was stopped (SIGSTOP), by when the RPC was sent'
set ylabel 'RPCs failed (deadline) per 100 ms (%)'
set xrange [-1:*]
set yrange [0:*]
set title 'scenario 5: a pod that stops reading'
plot {_lines(files)}
""", tmp)
    return [out]


# ---- markdown --------------------------------------------------------------------

def _ms(us):
    return "—" if us is None else f"{us / 1000:.2f}"


def _pct(v, nd=2):
    return "—" if v is None else f"{v * 100:.{nd}f}%"


def _num(v, nd=3):
    if v is None:
        return "—"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _met(g):
    return {True: "**met**", False: "**not met**", None: "not measured"}[g["met"]]


def render(results, chart_names=()):
    s = results["summary"]
    agg = aggregate(results)
    labels = [c["label"] for c in results["contenders"]]
    p = results["params"]
    L = []
    w = L.append
    w("# Balancing: round_robin, least_request and ewma on misbehaving pods\n")
    w("Generated by `make bench-balance` (tests/bench/balance.py) on "
      f"{results['started']}; mode: {results['mode']}; {results['elapsed_s']} s in all. "
      "Do not edit by hand: rerun, or re-render with tests/bench/balance_report.py.\n")
    w(f"Every run: {p['rate']:g} RPC/s offered open loop for {p['duration']:g} s over "
      f"{p['conns']} client connections to one Service of five pods (four in scenarios 4 and 5 "
      f"until the fifth joins), each pod answering after {p['base_delay_us']} us; client "
      f"deadline {p['deadline_ms']} ms. Latency is from each RPC's scheduled send time, so "
      f"a queue anywhere counts. Every scenario x policy ran {p['repeat']} times, interleaved "
      "(each policy once, then again); tables give the median over the repetitions, charts "
      "the first one. Timings on a shared 2-CPU machine are noisy (other work ran alongside: "
      "see the load average and the hiccups column); compare policies within one run.\n")
    w("## Targets (issue 9)\n")
    w("| target | bound | measured | |")
    w("|---|---|---|---|")
    for g in s["goals"]:
        bound = ("≥ " if g["how"] == "min" else "≤ ") + f"{g['bound']:g}"
        got = "never, within the run" if g.get("never") else _num(g["measured"])
        w(f"| {g['what']} | {bound} | {got} | {_met(g)} |")
    w("")
    w("## Recommendation\n")
    w(s["recommendation"]["text"] + "\n")
    checks = s["recommendation"].get("checks") or []
    if checks:
        w("| check | deciding | ewma | best other | ewma passed |")
        w("|---|---|---|---|---|")
        for c in checks:
            w(f"| {c['what']} | {'yes' if c['deciding'] else 'no'} | {_num(c['ewma'])} | "
              f"{_num(c['best_other'])} | {'yes' if c['won'] else 'no'} |")
        w("")
    if s["errors"]:
        w("## Problems\n")
        for e in s["errors"]:
            w(f"- `{e[:500]}`")
        w("")
    for sc, title in SCENARIO_TITLES.items():
        if sc not in agg:
            continue
        w(f"## {title}\n")
        w(_scenario_note(sc, p))
        by = agg[sc]
        pods = next((list(r["share"]) for r in by.values() if "share" in r), [])
        head = "| policy | success | p50 ms | p99 ms | p99.9 ms | " + \
            " | ".join(f"{x} share" for x in pods) + " | ejections | hiccups |"
        w(head)
        w("|" + "---|" * (7 + len(pods)))
        for lb in labels:
            r = by.get(lb)
            if not r:
                continue
            if "error" in r:
                w(f"| {lb} | error: {r['error'][:120]!r} |")
                continue
            w(f"| {lb} | {_pct(r.get('success'))} | {_ms(r.get('p50_us'))} | "
              f"{_ms(r.get('p99_us'))} | {_ms(r.get('p999_us'))} | " +
              " | ".join(_pct(r["share"][x], 1) for x in pods) + " | " +
              _num(r["daemon_counters"].get("h2split_outlier_ejections_total")) + " | " +
              _num(r.get("hiccup_buckets")) + " |")
        w("")
        if sc == "equal":
            w("Spread (max-min)/mean of the shares: " + ", ".join(
                f"{lb} {_num(by[lb].get('spread'))}" for lb in labels if lb in by) + ".\n")
        if sc in ("added", "cold"):
            w("| policy | first RPC after (s) | fair share after (s) | be-5 share after join | "
              "be-5 p50 / p99 first 2 s (ms) | other pods p99 same 2 s (ms) |")
            w("|---|---|---|---|---|---|")
            for lb in labels:
                r = by.get(lb, {})
                if "error" in r or not r:
                    continue
                w(f"| {lb} | {_num(r.get('first_rpc_after_s'))} | "
                  f"{_num(r.get('fair_share_after_s'))} | {_pct(r.get('new_share_after'), 1)} | "
                  f"{_ms(r.get('new_first2s_p50_us'))} / {_ms(r.get('new_first2s_p99_us'))} | "
                  f"{_ms(r.get('others_first2s_p99_us'))} |")
            w("")
        if sc == "stall":
            w("| policy | RPCs sent while stalled | failed (deadline) | success | p99 ms | "
              "failed after the first deadline | last failed RPC sent at (s after stall) |")
            w("|---|---|---|---|---|---|---|")
            for lb in labels:
                r = by.get(lb, {})
                if "error" in r or not r:
                    continue
                w(f"| {lb} | {_num(r.get('stalled_rpcs'))} | {_num(r.get('stalled_failed'))} | "
                  f"{_pct(r.get('stalled_success'))} | {_ms(r.get('stalled_p99_us'))} | "
                  f"{_num(r.get('failed_after_first_deadline'))} | "
                  f"{_num(r.get('last_failed_start_s'))} |")
            w("")
        if sc in ("near_slow", "near_dead"):
            dead = sc == "near_dead"
            w("| policy | near share" + (" before | while dead | failed after the kill | "
                                         "after | 80% near again after (s) |" if dead else " |"))
            w("|---|---|" + ("---|---|---|---|" if dead else ""))
            for lb in labels:
                r = by.get(lb, {})
                if "error" in r or not r:
                    continue
                w(f"| {lb} | {_pct(r.get('near_share'), 1)} |" + (
                    f" {_pct(r.get('near_share_dead'), 1)} | {_num(r.get('failed_after_kill'))} "
                    f"| {_pct(r.get('near_share_back'), 1)} | {_num(r.get('near_back_after_s'))} |"
                    if dead else ""))
            w("")
        if sc in ("killed", "killed_retry"):
            w("| policy | RPCs | failed | retries | retry budget exhausted |")
            w("|---|---|---|---|---|")
            for lb in labels:
                r = by.get(lb, {})
                if "error" in r or not r:
                    continue
                dc = r.get("daemon_counters", {})
                n = r.get("n") or 0
                w(f"| {lb} | {int(n)} | {round(n * (1 - (r.get('success') or 0)))} | "
                  f"{_num(dc.get('h2split_service_retries_total'))} | "
                  f"{_num(dc.get('h2split_service_retry_budget_exhausted_total'))} |")
            w("")
        for c in _charts_for(sc):
            if c in chart_names:
                w(f"![{c}]({c})\n")
    if "balance-p99.png" in chart_names:
        w("## p99 by scenario\n\n![balance-p99.png](balance-p99.png)\n")
    w("## How it was run\n")
    w("```")
    w("make bench-balance                                  # full run, rewrites this file")
    w("make bench-balance BALANCE_ARGS=--smoke             # seconds per run, no docs")
    w("make bench-balance BALANCE_ARGS='--variant ewma+ss=ewma,--slow-start,5000'  "
      "# one more contender")
    w("/usr/bin/python3 tests/bench/balance_report.py build/bench/balance.json docs  "
      "# re-render")
    w("```\n")
    w("This run: `make bench-balance" + (f" BALANCE_ARGS='{' '.join(results['argv'])}'"
                                         if results.get("argv") else "") + "`\n")
    w("Shares count the RPCs each pod answered (x-pod header); ejections: h2splitd's "
      "h2split_outlier_ejections_total at the end of the run; hiccups: 100 ms buckets whose "
      "p99 was 50 ms or more although none of their RPCs failed: the shared machine "
      "stalling everything (other benchmarks ran alongside), not a pod, so a p99 from a run "
      "with many of them says little about its policy.\n")
    cmds = results.get("commands", {})
    w("Simulated node: tests/testbed (pods are netns + cgroup, kube-proxy-shaped iptables); "
      "the client pod's connects to the ClusterIP are redirected to h2splitd by its BPF "
      "programs, as on a real node. Each scenario x policy starts a fresh h2splitd.\n")
    for k, what in (("backend", "Backend (each pod)"), ("load", "Client (client pod)"),
                    ("h2splitd", "h2splitd (node netns), plus --lb-policy per run")):
        if k in cmds:
            w(f"{what}: `{cmds[k]}`\n")
    extra = p.get("daemon_arg") or []
    if extra or p.get("annotations"):
        w(f"Extra h2splitd args: `{' '.join(extra)}`; Service annotations: "
          f"`{p.get('annotations')}`\n")
    for c in results["contenders"]:
        if c["args"]:
            w(f"Contender {c['label']}: --lb-policy {c['policy']} {' '.join(c['args'])}\n")
    m, v = results["machine"], results["versions"]
    w(f"Machine: {m.get('cpu')}, {m.get('cpus')} CPUs, {m.get('mem_gib')} GiB, Debian "
      f"{m.get('debian')}; load average {m.get('loadavg_start')} at the start, "
      f"{m.get('loadavg_end')} at the end (other work shares the machine).\n")
    w(f"Versions: kernel {v.get('kernel')}; h2splitd `{v.get('h2splitd')}`; git "
      f"{v.get('git')}; {v.get('gcc')}.\n")
    return "\n".join(L) + "\n"


def _scenario_note(sc, p):
    return {
        "equal": "All five pods alike. Target: every policy keeps per-pod shares within 5% "
                 "(spread = (max-min)/mean ≤ 0.05).\n",
        "slow": f"be-4 answers after {p['base_delay_us'] * p['slow_factor']} us instead of "
                f"{p['base_delay_us']} us. Target: p99 with ewma ≤ 0.5x round_robin's.\n",
        "failing": f"be-4 answers {p['fail_pct']}% of RPCs at once with grpc-status 14 "
                   "(UNAVAILABLE, Trailers-Only). h2splitd's outlier ejection is on with its "
                   "defaults (5 failures in a row or half of the last 20, for 30 s). "
                   "Target: success ≥ 99.5%.\n",
        "added": "be-0..be-3 serve; a third of the way in be-5, as fast as they are, joins the "
                 "Service (the services file is rewritten; h2splitd picks it up via "
                 "inotify). Target: be-5 reaches a fair share within 1 s (first 100 ms "
                 "bucket with ≥ 80% of 1/5).\n",
        "cold": f"As scenario 4, but be-5 is cold: its delay starts {p['cold_factor']}x the "
                f"base and falls linearly to the base over {p['cold_ms']} ms after its first "
                "RPC. Slow start should avoid the p99 spike of the RPCs it gets meanwhile "
                "(compare a `--variant` with slow start). ewma judges a pod that joined "
                "less than 5 s ago by streams in flight alone, not by its latency: a server "
                "that warms up with traffic (JIT, thread pools) would otherwise never get "
                "the traffic to warm up, so here it fills the cold pod as least_request "
                "does.\n",
        "stall": "A third of the way in be-4 gets SIGSTOP: its sockets stay open, nothing "
                 "reads them; it gets SIGCONT after the run. RPCs on it end at the client's "
                 "deadline. Figures below cover RPCs sent after the stall.\n",
        "near_slow": "The Service says `trafficDistribution: PreferSameZone`; be-0 and be-1 "
                     "run in this node's zone (their EndpointSlice entries say so), be-2..be-4 "
                     f"in another. Both near pods answer after "
                     f"{p['base_delay_us'] * p['slow_factor']} us. Locality keeps RPCs in the "
                     "zone until the near pods run 4x busier per pod than the far ones (at "
                     "least 8 streams each), then spills (README, Locality).\n",
        "near_dead": "As scenario 7 with every pod equally fast; a third of the way in both "
                     "near pods get SIGKILL, half way they are started again (same addresses). "
                     "RPCs in flight on them fail; later ones find the near tier unusable "
                     "(connect failures put both in backoff, 0.5 s doubling) and go to the "
                     "far pods; once back, the near tier's share ramps up over 2 s from "
                     "the end of their backoff. A near pod that failed 5 streams in a row "
                     "(sent on its connection as it died) is also ejected for 30 s "
                     "(the ejections column); the tier then comes back with the other.\n",
        "killed": "A third of the way in be-4 starts answering every RPC with grpc-status 14 "
                  "(UNAVAILABLE, Trailers-Only), as a pod that is shutting down does; half way "
                  "it gets SIGKILL (RPCs in flight on it are lost, connects to it fail until "
                  "the run ends). No retry policy: only outlier ejection and the retries of "
                  "unprocessed streams help.\n",
        "killed_retry": "As scenario 9, with `h2split.io/retry-policy` on the Service "
                        "(UNAVAILABLE retryable, 3 attempts, backoff 5-50 ms, the default "
                        "budget): the UNAVAILABLE answers and the RPCs lost with the pod's "
                        "connection go to another pod (README, Retries and hedging). Retries: "
                        "the `h2split_service_retries_total` column.\n",
    }[sc]


def _charts_for(sc):
    return {"slow": ["balance-slow-cdf.png"], "added": ["balance-added-share.png"],
            "stall": ["balance-stall.png"]}.get(sc, [])


def write_docs(results, out_dir):
    out_dir = os.path.abspath(out_dir)  # gnuplot runs in a scratch directory
    os.makedirs(out_dir, exist_ok=True)
    made = charts(results, out_dir)
    md = os.path.join(out_dir, "balancing.md")
    with open(md, "w") as f:
        f.write(render(results, [os.path.basename(x) for x in made]))
    return md


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: balance_report.py RESULTS.json DOCS_DIR")
    with open(sys.argv[1]) as fh:
        res = json.load(fh)
    res["summary"] = summarize(res)
    print(write_docs(res, sys.argv[2]))
