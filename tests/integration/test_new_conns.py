# SPDX-License-Identifier: Apache-2.0
"""New connections on the simulated node: what a client that opens a fresh
HTTP/2 connection for its call sees from h2splitd.

A client pod dials the ClusterIP of an opted-in Service (two gRPC backend
pods), so BPF redirects it to h2splitd, and speaks raw HTTP/2 (h2raw.py)
from a small script run in that pod. Checked:
- preface + SETTINGS + a whole unary request in the connection's first
  bytes (the way gRPC clients write them, and the fast path at accept):
  the response arrives with status 200, and the first frame
  the server sends is its SETTINGS (RFC 9113 3.4), also now that h2splitd
  holds its SETTINGS to send them with the first response;
- that hold is bounded: with a backend that never answers, the server's
  SETTINGS and the ACK of the client's still arrive;
- a client that sends its preface + SETTINGS alone gets SETTINGS at once;
- a preface split across two writes (the sniff path that waits) is served;
- a burst of new connections (conn_rate, which checks :status 200 and
  grpc-status 0 of every call) opens no new upstream connection once the
  pool has its connections.
"""

import json
import os
import re
import subprocess

import pytest

import testbed

HERE = os.path.dirname(os.path.abspath(__file__))
PORT = 50051
ADMIN = "http://127.0.0.1:9901"

# Run in the client pod: one connection, frames with their arrival times.
CLIENT = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import h2raw
host, port, mode, delay_ms = sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
wait_for = sys.argv[6]
c = h2raw.Conn(host, port)
stamps = []
orig = c._frame
def stamp(ftype, flags, sid, payload):
    stamps.append((ftype, flags, sid, round((time.monotonic() - c.t0) * 1000, 2)))
    orig(ftype, flags, sid, payload)
c._frame = stamp
block = h2raw.encode(h2raw.request_fields(f"{host}:{port}"))
req = (h2raw.headers(1, block) +
       h2raw.data(1, h2raw.echo_request({"delay_ms": delay_ms}), end_stream=True))
if mode == "together":
    c.send(h2raw.PREFACE, h2raw.settings(), req)
elif mode == "split":
    c.send(h2raw.PREFACE[:10])
    time.sleep(0.1)
    c.send(h2raw.PREFACE[10:], h2raw.settings(), req)
else:  # "settings": preface + SETTINGS, the request only once the server spoke
    c.send(h2raw.PREFACE, h2raw.settings())
    c.wait(lambda k: any(f[0] == h2raw.SETTINGS and not f[1] & h2raw.ACK for f in k.frames), 10)
    c.send(req)
if wait_for == "stream":
    c.wait(lambda k: k.stream_ended(1) or k.end, 15)
else:  # the server's SETTINGS and the ACK of ours
    c.wait(lambda k: sum(f[0] == h2raw.SETTINGS for f in k.frames) >= 2 or k.end, 5)
hdrs = c.response_headers(1) or []
c.close()
print(json.dumps({"frames": stamps, "end": c.end, "ended": c.stream_ended(1),
                  "rst": c.rsts.get(1),
                  "status": next((v.decode() for k, v in hdrs if k == b":status"), None)}))
"""


@pytest.fixture(scope="module")
def bed(module_node, build_dir):
    node = module_node
    servers = node.add_server_pods(["server-0", "server-1"])
    svc = node.add_service("echo", PORT, pods=servers)
    # An HTTP/2 backend that reads everything and answers nothing, not even
    # SETTINGS: a response that never comes.
    sink_pod = node.add_pod("sink-0")
    sink_pod.popen([testbed.python(), "-u", os.path.join(HERE, "h2raw.py"), "serve", "silent",
                    "--port", str(PORT)], name="sink", watch=True).wait_line("ready", 15)
    sink = node.add_service("sink", PORT, pods=[sink_pod])
    client = node.add_pod("client")
    daemon = node.popen([os.path.join(build_dir, "h2splitd"), *node.daemon_args(),
                         "--listen", "169.254.20.11:15001", "--workers", "1",
                         "--log-level", "info"], name="h2splitd", watch=True,
                        stderr=subprocess.STDOUT)
    daemon.wait_line(r"msg=redirecting", 20)
    return node, svc, client, daemon, sink


def run_client(bed, mode, svc=None, wait_for="stream", delay_ms=0):
    node, echo, client, daemon, _ = bed
    r = client.run([testbed.python(), "-c", CLIENT, HERE, (svc or echo).vip4, str(PORT), mode,
                    str(delay_ms), wait_for], timeout=60, check=False)
    assert r.returncode == 0, f"client failed:\n{r.stdout}\n{r.stderr}\n{daemon.log_tail()}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def one(bed, mode):
    """One call on a new connection; it must succeed."""
    out = run_client(bed, mode)
    # (grpc-status is checked by conn_rate below: h2raw cannot decode Huffman names)
    assert out["ended"] and out["rst"] is None and out["status"] == "200", out
    return out


def first(frames, ftype, ack=None, sid=None):
    """Arrival time (ms) of the first frame of ``ftype`` (SETTINGS: ack or not)."""
    for t, flags, s, ms in frames:
        if t == ftype and (ack is None or bool(flags & 1) == ack) and (sid is None or s == sid):
            return ms
    return None


SETTINGS, HEADERS = 4, 1


def test_request_in_first_bytes_gets_settings_first(bed):
    for _ in range(5):
        out = one(bed, "together")
        frames = out["frames"]
        assert frames[0][0] == SETTINGS and not frames[0][1] & 1, \
            f"the server's first frame must be its SETTINGS: {frames}"
        assert first(frames, SETTINGS, ack=True) is not None, frames
        assert first(frames, HEADERS, sid=1) >= frames[0][3]


def test_settings_not_held_for_a_response_that_never_comes(bed):
    """The backend behind "sink" never answers: the server's SETTINGS and
    the ACK of the client's still arrive, a few ms after the request."""
    out = run_client(bed, "together", svc=bed[4], wait_for="settings")
    frames = out["frames"]
    settings_ms = first(frames, SETTINGS, ack=False)
    ack_ms = first(frames, SETTINGS, ack=True)
    assert settings_ms is not None and ack_ms is not None, out
    assert frames[0][0] == SETTINGS and not frames[0][1] & 1, frames
    assert first(frames, HEADERS, sid=1) is None, frames  # no response: they came alone
    # H2_DS_SETTINGS_HOLD_MS is 2; a loaded machine may add a little.
    assert settings_ms < 1000 and ack_ms < 1000, frames


def test_preface_alone_gets_settings(bed):
    out = one(bed, "settings")
    assert out["frames"][0][0] == SETTINGS, out


def test_split_preface_is_served(bed):
    out = one(bed, "split")
    assert out["frames"][0][0] == SETTINGS, out


def metric(node, name):
    r = node.run(["curl", "-s", "--max-time", "5", ADMIN + "/metrics"])
    m = re.search(rf"^h2split_{name} (\d+)$", r.stdout, re.M)
    assert m, f"h2split_{name} missing from /metrics"
    return int(m.group(1))


def test_new_connections_reuse_pooled_upstreams(bed, build_dir):
    """conn_rate opens 300 connections, 8 at a time, one call each (an empty
    message: the echo service reads it as no options): the
    daemon opens no upstream connection for them beyond one per backend."""
    node, svc, client, daemon, _ = bed
    tool = os.path.join(build_dir, "bench", "conn_rate")
    if not os.access(tool, os.X_OK):
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        r = testbed.util.run(["make", "-C", repo, "-s", "--no-print-directory",
                              f"BUILD={build_dir}", tool], timeout=300, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
    one(bed, "together")  # the pool has its connections
    before = metric(node, "upstream_connections_total")
    accepted = metric(node, "downstream_connections_total")
    r = client.run([tool, "-n", "300", "-c", "8", "-D", "60", "-b", "0",
                    f"http://{svc.vip4}:{PORT}/h2split.test.Echo/Unary"], timeout=90)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["all_completed"] == 300 and res["failed"] == 0, res
    assert metric(node, "downstream_connections_total") - accepted == 300
    assert metric(node, "upstream_connections_total") - before == 0
