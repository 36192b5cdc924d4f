# SPDX-License-Identifier: Apache-2.0
"""The benchmark harness (tests/bench, ``make bench``) in its smoke mode: a
tiny sweep on the simulated node, seconds per run, no speed assertions. It
must still produce every figure docs/benchmarks.md reports, each a finite
number, positive unless it is a spread of shares (may be 0) or the latency
a proxy adds over direct (a difference within the noise, may be below 0),
and render the document and its charts, so the harness never rots between
full runs."""

import math
import os
import shutil
import subprocess
import sys

import pytest

import testbed
from conftest import REPO_DIR, bed_unavailable

sys.path.insert(0, os.path.join(REPO_DIR, "tests", "bench"))

import h2bench  # noqa: E402
import peers  # noqa: E402

PROXIES = ("h2split", "nghttpx", "haproxy", "nginx")
TARGETS = ("direct",) + PROXIES
CHARTS = ("bench-throughput.png", "bench-latency.png", "bench-cpu.png", "bench-connect.png")


@pytest.fixture
def bench_bins(build_dir):
    """build/bench/grpc_backend, connect_loop and conn_rate, from the Makefile's own rule."""
    targets = [os.path.join(build_dir, "bench", n) for n in ("grpc_backend", "connect_loop",
                                                              "conn_rate")]
    r = subprocess.run(["make", "-s", "--no-print-directory", f"BUILD={build_dir}", *targets],
                       cwd=REPO_DIR, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"building the benchmark helpers failed:\n{r.stdout}{r.stderr}"
    return targets


@pytest.fixture
def peer_tools():
    missing = [p.tool for p in peers.ALL.values() if not shutil.which(p.tool)]
    if missing:
        bed_unavailable(f"benchmark peers not installed: {' '.join(missing)} "
                        "(apt-get install nghttp2-proxy haproxy nginx-light)")


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def positive(d, keys, what):
    """Each of ``keys`` in ``d`` is a finite number above 0 (NaN, inf, None,
    a string or a bool is a harness bug)."""
    for k in keys:
        v = d.get(k)
        assert is_number(v) and v > 0, f"{what}[{k}] = {v!r}; whole: {d}"


def test_bench_smoke_produces_every_figure(require_bed, build_dir, bench_bins, peer_tools,
                                           tmp_path, monkeypatch):
    monkeypatch.setenv("H2SPLIT_BUILD", build_dir)
    args = h2bench.parse_args(["--smoke", "--prefix", testbed.bed.prefix_from_env(),
                               "--json", str(tmp_path / "results.json"),
                               "--docs", str(tmp_path / "docs")])
    res = h2bench.run(args)
    s = res["summary"]

    assert not s["errors"], "load runs failed:\n" + "\n".join(s["errors"])
    assert not res["notes"], "problems:\n" + "\n".join(res["notes"])
    assert os.path.exists(tmp_path / "results.json")

    positive(s["throughput_small_best_req_s"], TARGETS, "throughput")
    positive(s, ("throughput_vs_nghttpx", "throughput_vs_haproxy", "throughput_vs_nginx",
                 "throughput_vs_direct"), "summary")
    positive(s["p99_equal_load_us"], TARGETS, "p99 at equal load")
    positive(s, ("p99_equal_load_vs_nghttpx", "offered_rps"), "summary")
    positive(s["p50_1x1_us"], TARGETS, "p50 at 1x1")
    # A difference of two p50s: within the noise it may come out at or below
    # 0 (h2split measured 84 us to direct's 87 here once), so finite is all.
    assert set(s["added_p50_us_1x1_all"]) == set(PROXIES)
    assert all(is_number(v) for v in s["added_p50_us_1x1_all"].values()), s
    positive(s["cpu_s_per_10k_small"], PROXIES, "CPU s per 10k requests")
    positive(s["peak_rss_mib"], PROXIES, "peak RSS")
    positive(s["idle_kib_per_conn_all"], PROXIES, "RSS per idle connection")
    positive(s["inflight_kib_per_stream_all"], PROXIES, "RSS per stream in flight")
    positive(s["requests_per_cpu_second_small"], PROXIES, "requests per CPU second")
    positive(s, ("efficiency_vs_nghttpx", "efficiency_vs_haproxy", "efficiency_vs_nginx",
                 "idle_kib_per_conn", "inflight_kib_per_stream"), "summary")
    for t in PROXIES:
        shares, spread = s["balance"][t]["shares"], s["balance"][t]["spread"]
        assert len(shares) == 3 and all(is_number(x) and x > 0 for x in shares), \
            f"{t} balance {shares}"
        assert abs(sum(shares) - 1) < 0.01
        assert is_number(spread) and spread >= 0, f"{t} spread {spread!r}"
    for case in ("none", "detached", "passed", "redirected"):
        positive(s["connect_us"][case], ("p50", "mean"), f"connect {case}")
    positive(s, ("redirected_connect_vs_plain", "redirected_connect_vs_plain_mean",
                 "passed_connect_vs_plain"), "summary")
    # New connections: every target served fresh connections, every proxy's
    # CPU per connection measured, both ratios to nghttpx there.
    positive(s["new_conns_s"], TARGETS, "new connections per second")
    positive(s["new_conns_cpu_us_per_conn"], PROXIES, "proxy CPU per new connection")
    positive(s, ("new_conns_vs_nghttpx", "new_conns_cpu_vs_nghttpx"), "summary")
    calls = res["calls_cost"]
    for v in ("on", "off"):
        positive(calls[v], ("req_s", "req_per_cpu_s"), f"calls cost, series {v}")
    for key, g in s["goals"].items():
        if key in ("added_p50_us_1x1", "calls_cost_pct"):  # differences, may be <= 0
            assert is_number(g["measured"]), g
        else:
            positive(g, ("measured",), f"goal {key}")

    # Every proxy balanced per request: all three backends served in every run.
    for r in res["runs"]:
        if r["target"] != "direct":
            assert all(x > 0 for x in r["backend_requests"]), r

    md = (tmp_path / "docs" / "benchmarks.md").read_text()
    assert "## New connections" in md
    for g in s["goals"].values():
        assert g["what"] in md
    for c in CHARTS:
        assert (tmp_path / "docs" / c).stat().st_size > 1000, c
        assert f"({c})" in md
