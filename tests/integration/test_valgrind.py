# SPDX-License-Identifier: Apache-2.0
"""h2splitd under valgrind memcheck on the simulated node: it loads and
attaches its BPF programs (valgrind runs the bpf(2) calls; see
valgrind.supp for the one false report, in libbpf), splits grpcio RPCs
(unary, server streaming and bidi, through the redirect), and drains and
exits on SIGTERM. The test asserts a clean exit, no invalid read or write
(or any other memcheck error), and what docs/security.md promises: 0 bytes
in use at exit, so no block lost, definitely or otherwise. Skipped under
SANITIZE=1 (ASan and valgrind do not mix)."""

import os
import re
import signal

import pytest

import testbed
from test_splitter import Daemon, assert_all_ok

VALGRIND_ERROR = 99
SUPP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "valgrind.supp")

pytestmark = pytest.mark.skipif(testbed.sanitized(), reason="ASan build: valgrind cannot run it")


def test_no_memory_errors_or_leaks(node, build_dir, tmp_path):
    log = tmp_path / "valgrind.log"
    servers = node.add_server_pods(["server-0", "server-1"])
    svc = node.add_service("echo", pods=servers)
    client = node.add_pod("client-0")
    wrapper = ("valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite",
               f"--error-exitcode={VALGRIND_ERROR}", f"--suppressions={SUPP}",
               f"--log-file={log}")
    d = Daemon(node, build_dir).start("--workers", "2", "--drain-timeout", "5",
                                      wrapper=wrapper, timeout=120)
    with client.grpc_client(svc.target4) as c:
        assert_all_ok(c.unary(200, concurrency=4, rpc_timeout=30), "unary RPCs under valgrind")
        r = c.server_stream(20, rpc_timeout=30, size=4096)
        assert r["ok"] == 1 and r["messages"] == 20, r
        r = c.bidi(20, rpc_timeout=30, size=1024)
        assert r["ok"] == 1, r
        # Error paths: a status from the backend, and deadlines the daemon
        # enforces (grpc-timeout) by resetting the upstream stream.
        r = c.unary(5, status=5, rpc_timeout=30)
        assert r["errors"] == {"NOT_FOUND": 5}, r
        r = c.unary(3, delay_ms=3000, rpc_timeout=0.3)
        assert r["errors"] == {"DEADLINE_EXCEEDED": 3}, r
    streams = d.metrics().get("h2split_downstream_streams_total")
    assert streams >= 210, f"the RPCs did not go through h2splitd: {streams} streams"
    d.proc.send_signal(signal.SIGTERM)
    rc = d.proc.wait(120)
    text = log.read_text()
    # The error reports and the summary, without valgrind's notes on BPF
    # commands it does not model (harmless: it just does not track them).
    summary = "\n".join(ln for ln in text.splitlines() if "unhandled eBPF" not in ln)[-6000:]
    assert rc == 0, f"h2splitd under valgrind exited {rc}:\n{summary}"
    assert re.search(r"ERROR SUMMARY: 0 errors", text), summary
    # No HEAP SUMMARY: valgrind never saw h2splitd exit (killed, or it exec'd).
    heap = re.search(r"in use at exit: ([\d,]+) bytes in ([\d,]+) blocks", text)
    assert heap, f"valgrind printed no heap summary:\n{summary}"
    assert heap.group(1, 2) == ("0", "0"), f"memory in use at exit:\n{summary}"
    assert "definitely lost:" not in text and \
        "All heap blocks were freed -- no leaks are possible" in text, summary
