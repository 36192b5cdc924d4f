# SPDX-License-Identifier: Apache-2.0
"""h2splitd's hardening limits, set low by flags, on the simulated node.

One daemon runs with every downstream limit turned down (LIMIT_ARGS). For
each limit an attacker pod (h2raw.py attack limit --case ...) runs into it,
and the test checks what the user of the node cares about:
- the attacker's stream is reset, or its connection ends with the GOAWAY
  code docs/security.md gives for that limit;
- h2split_limit_exceeded_total{limit=...} counted it, and the daemon logged
  it (once per connection) with the client's address;
- a well-behaved grpcio client in another pod, making RPCs through the same
  daemon the whole time, sees no failure (test_hostile.attack_window).
"""

import pytest

import testbed
from test_hostile import Bed, attack_window, goaway_code

LIMIT_ARGS = ["--max-headers", "16", "--max-header-list-size", "4096",
              "--max-concurrent-streams", "5", "--max-control-frame-rate", "100",
              "--max-pending-bytes", "65535", "--idle-timeout", "2", "--header-timeout", "1",
              "--max-connections-per-pod", "3"]


@pytest.fixture(scope="module")
def bed(module_node, build_dir):
    b = Bed(module_node, build_dir, extra_args=LIMIT_ARGS)
    yield b
    b.good.stop()


def run_limit(bed, case, *args, host=None):
    """Run one case; return (h2raw summary, increase of each limit counter)."""
    before = bed.limits()
    with attack_window(bed, max_cpu_s=3.0, max_rss_mib=16):
        r = bed.attack("limit", "--case", case, *args, host=host)
    after = bed.limits()
    hit = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
    print(f"{case}: {r}; limits hit: {hit}")
    return r, hit


def logged(bed, limit):
    return testbed.wait_for(
        lambda: bed.log_tail(rf"limit_exceeded limit={limit} client=\S*{bed.attacker.ip4}", 1),
        10, f"the daemon to log limit_exceeded limit={limit} for the attacker")


@pytest.mark.parametrize("case,n,limit", [("headers", 20, "headers"),
                                          ("header-list", 5000, "header_list_size")])
def test_header_limits_reset_the_stream_only(bed, case, n, limit):
    """A request over --max-headers / --max-header-list-size is refused with
    RST_STREAM and never reaches a backend; the connection (and its HPACK
    context) goes on: an honest request on it is answered."""
    unary = bed.backend_unary()
    r, hit = run_limit(bed, case, "--n", n, "--seconds", 5)
    assert r["rst"] == {"INTERNAL_ERROR": 1}, r
    assert r["status"] is None, r
    assert r["honest_status"] == "200", r
    assert hit == {limit: 1}, hit
    assert bed.backend_unary() - unary == 1, "only the honest request reaches a backend"
    logged(bed, limit)


def test_concurrent_streams_over_the_limit_end_the_connection(bed):
    """A 6th open stream past SETTINGS_MAX_CONCURRENT_STREAMS 5 (acknowledged by
    the client) is a connection error: GOAWAY(PROTOCOL_ERROR)."""
    r, hit = run_limit(bed, "concurrent", "--n", 6, "--seconds", 10)
    assert goaway_code(r) == "PROTOCOL_ERROR", r
    assert r["end"] in ("eof", "reset"), r
    assert hit == {"concurrent_streams": 1}, hit
    logged(bed, "concurrent_streams")


def test_control_frame_rate(bed):
    """1000 WINDOW_UPDATEs at once against a budget of 100 a second (nothing
    for nghttp2 to answer, so no outbound flood): GOAWAY(ENHANCE_YOUR_CALM)."""
    r, hit = run_limit(bed, "control-rate", "--n", 1000, "--seconds", 10)
    assert goaway_code(r) == "ENHANCE_YOUR_CALM", r
    assert r["end"] in ("eof", "reset"), r
    assert hit == {"control_frame_rate": 1}, hit
    logged(bed, "control_frame_rate")


def test_pending_bytes_over_the_window(bed):
    """The sink backend never opens its window, so nothing drains: 128 KiB of
    body against a stream window of 65535 (--max-pending-bytes) is a flow
    control error on that stream."""
    r, hit = run_limit(bed, "pending", "--n", 128 * 1024, "--seconds", 10,
                       host=bed.sink.vip4)
    assert r["rst"] == {"FLOW_CONTROL_ERROR": 1} or \
        goaway_code(r) == "FLOW_CONTROL_ERROR", r
    assert hit == {"pending_bytes": 1}, hit
    logged(bed, "pending_bytes")


def test_header_timeout(bed):
    """Half a HEADERS frame, then silence: after --header-timeout 1 s the
    connection gets GOAWAY(ENHANCE_YOUR_CALM) and is closed."""
    r, hit = run_limit(bed, "slow-headers", "--seconds", 15)
    assert goaway_code(r) == "ENHANCE_YOUR_CALM", r
    assert r["end"] in ("eof", "reset"), r
    assert hit == {"header_timeout": 1}, hit
    logged(bed, "header_timeout")


def test_idle_timeout(bed):
    """A connection without streams for --idle-timeout 2 s gets GOAWAY(NO_ERROR)
    and is closed (the good client's channel, busy all along, is not)."""
    r, hit = run_limit(bed, "idle", "--seconds", 15)
    assert goaway_code(r) == "NO_ERROR", r
    assert r["end"] in ("eof", "reset"), r
    assert r["waited_s"] >= 1.5, r
    assert hit == {"idle_timeout": 1}, hit
    logged(bed, "idle_timeout")


def test_connections_per_pod(bed):
    """5 connections at once from one pod with --max-connections-per-pod 3: the
    first 3 are served, the other 2 are reset before a byte is read (counted,
    logged); the good client's pod is not affected, and once the attacker's
    connections close a new one is served again."""
    r, hit = run_limit(bed, "connections", "--n", 5, "--seconds", 15)
    assert r["served"] == 3, r
    assert len(r["refused"]) == 2 and set(r["refused"]) <= {"reset", "eof", "ConnectionResetError"}, r
    assert r["served_again_after_s"] is not None and r["status_after"] == "200", r
    # 2, plus any retry made before the daemon saw the closes
    assert list(hit) == ["connections_per_pod"] and hit["connections_per_pod"] >= 2, hit
    logged(bed, "connections_per_pod")
