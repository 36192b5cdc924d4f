# SPDX-License-Identifier: Apache-2.0
"""The balance benchmark (tests/bench/balance.py, ``make bench-balance``) in
its smoke mode: every scenario with every policy for a second or two, no
timing assertions. It must still produce every figure docs/balancing.md
reports and render the document and its charts, so the harness never rots
between full runs. The only outcomes checked are ones no timing can change:
round_robin sends the stalled pod its turn whatever happens, so RPCs fail
while it is stopped, and it sends the added pod (warm or cold) RPCs once it
has joined. Every figure is a finite number; latencies, rates and counts of
what was sent are above 0, shares and what can rightly be none (a spread, a
policy's failures, a share before the pod had any) at least 0."""

import math
import os
import subprocess
import sys

import testbed
from conftest import REPO_DIR

sys.path.insert(0, os.path.join(REPO_DIR, "tests", "bench"))

import balance  # noqa: E402
import balance_report  # noqa: E402

CHARTS = ("balance-p99.png", "balance-slow-cdf.png", "balance-added-share.png",
          "balance-stall.png")


def number(d, keys, what, low=0, above=True):
    """Each of ``keys`` in ``d`` is a finite number above ``low`` (at least
    ``low`` when not ``above``): NaN, inf, None or a bool is a harness bug."""
    for k in keys:
        v = d.get(k)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
            and (v > low if above else v >= low)
        assert ok, f"{what}[{k}] = {v!r}, want {'>' if above else '>='} {low}; " \
            f"whole: { {x: y for x, y in d.items() if x != 'curve'} }"


def test_balance_smoke_produces_every_figure(require_bed, build_dir, tmp_path, monkeypatch):
    bins = [os.path.join(build_dir, "bench", n) for n in ("grpc_backend", "balance_load")]
    r = subprocess.run(["make", "-s", "--no-print-directory", f"BUILD={build_dir}", *bins],
                       cwd=REPO_DIR, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"building the benchmark helpers failed:\n{r.stdout}{r.stderr}"
    monkeypatch.setenv("H2SPLIT_BUILD", build_dir)
    args = balance.parse_args(["--smoke", "--prefix", testbed.bed.prefix_from_env(),
                               "--json", str(tmp_path / "balance.json"),
                               "--docs", str(tmp_path / "docs")])
    res = balance.run(args)
    s = res["summary"]

    assert not s["errors"], "runs failed:\n" + "\n".join(s["errors"])
    assert os.path.exists(tmp_path / "balance.json")
    for sc in balance.SCENARIOS:
        for pol in balance.POLICIES:
            rec = s["scenarios"][sc][pol]
            number(rec, ("n", "success", "p50_us", "p99_us", "p999_us"), f"{sc}/{pol}")
            assert rec["success"] <= 1, (sc, pol, rec["success"])  # a rate
            number(rec, ("spread",), f"{sc}/{pol}", above=False)
            number(rec["share"], list(rec["share"]), f"{sc}/{pol} share", above=False)
            assert abs(sum(rec["share"].values()) - 1) < 0.01, (sc, pol, rec["share"])
    for sc in ("added", "cold"):
        joined = s["scenarios"][sc]
        for pol in balance.POLICIES:
            number(joined[pol], ("fair_share",), f"{sc}/{pol}")
            number(joined[pol], ("new_share_after",), f"{sc}/{pol}", above=False)
        assert joined["round_robin"]["share"]["be-5"] > 0, joined["round_robin"]
        number(joined["round_robin"], ("new_first2s_p99_us", "new_share_after"), f"{sc}/rr")
        number(joined["round_robin"], ("first_rpc_after_s",), f"{sc}/rr", above=False)
    for pol in balance.POLICIES:
        stall = s["scenarios"]["stall"][pol]
        number(stall, ("stalled_rpcs",), f"stall/{pol}")
        number(stall, ("stalled_failed", "stalled_success"), f"stall/{pol}", above=False)
    assert s["scenarios"]["stall"]["round_robin"]["stalled_failed"] > 0, \
        s["scenarios"]["stall"]["round_robin"]
    for pol in balance.POLICIES:  # a retry policy retried what the dying pod failed
        dc = s["scenarios"]["killed_retry"][pol]["daemon_counters"]
        assert dc["h2split_service_retries_total"] > 0, ("killed_retry", pol, dc)
    for g in s["goals"]:
        if not g.get("never"):
            # a spread of equal shares may be 0; every other goal is a ratio,
            # a rate or a time
            number(g, ("measured",), f"goal {g['what']}", above="spread" not in g["what"])
    assert s["recommendation"]["checks"], s["recommendation"]
    # Without every deciding scenario there is no recommendation either way.
    partial = balance_report.recommend({"equal": s["scenarios"]["equal"]}, list(balance.POLICIES))
    assert partial["default"] is None and "no recommendation" in partial["text"], partial

    md = (tmp_path / "docs" / "balancing.md").read_text()
    for g in s["goals"]:
        assert g["what"] in md
    assert s["recommendation"]["text"] in md
    for c in CHARTS:
        assert (tmp_path / "docs" / c).stat().st_size > 1000, c
        assert f"({c})" in md
