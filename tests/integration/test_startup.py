# SPDX-License-Identifier: Apache-2.0
"""Start-up that fails part way must fail cleanly: h2splitd started with too
few file descriptors for everything it opens (BPF objects, workers' loops and
listeners, admin) exits 1 with a message naming what failed, at whichever
step it ran out — never a crash, never a hang — and with enough it starts.
"""

import os
import subprocess

import pytest

import testbed

WORKERS = 2


@pytest.fixture
def bed(node):
    node.add_service("echo", pods=node.add_server_pods(["server-0"]))
    return node


def start(node, build_dir, nofile):
    argv = ["prlimit", f"--nofile={nofile}:{nofile}", os.path.join(build_dir, "h2splitd"),
            *node.daemon_args(), "--workers", str(WORKERS), "--log-level", "info"]
    return node.popen(argv, name=f"h2splitd-nofile{nofile}", watch=True,
                      stderr=subprocess.STDOUT)


def test_every_fd_limit_fails_cleanly_or_starts(bed, build_dir):
    outcomes = {}  # nofile -> what happened
    for nofile in range(8, 400):
        p = start(bed, build_dir, nofile)
        line = p.wait_line(r"msg=(redirecting|exiting|services_file_unreadable)|^h2splitd: ", 60)
        if "msg=exiting" in line or line.startswith("h2splitd: "):
            rc = p.wait(30)
            assert rc == 1, f"nofile={nofile}: exit {rc} (a signal?), not 1\n{p.log_tail()}"
            msg = next((l for l in p.lines if l.startswith("h2splitd: ")), line)
            outcomes[nofile] = msg.split(":")[1].strip()
            continue
        # Up: redirecting, or alive and saying why not (no fd to read the
        # services file with). Either way it stops cleanly.
        outcomes[nofile] = "started" if "msg=redirecting" in line else "up, file unreadable"
        p.send_signal(15)
        assert p.wait(30) == 0, p.log_tail()
        if outcomes[nofile] == "started":
            break
    print("\n".join(f"{k}: {v}" for k, v in outcomes.items()))
    assert "started" in outcomes.values(), f"never started up to 400 fds: {outcomes}"
    # The sweep ran out of fds inside each start-up step, so it exercised the
    # unwinding of each: BPF loading and the workers at least.
    failed = set(outcomes.values())
    assert {"loading BPF programs failed", "starting workers failed"} <= failed, outcomes
