# SPDX-License-Identifier: Apache-2.0
"""cgroup v2 helpers for the test bed: create, empty (kill everything in), remove.

Only the bed's own directory under the cgroup2 mount is ever written; the
machine's root cgroup is only read (to find the mount) and gets one child
directory created and removed.
"""

import os
import signal
import time

from .util import pid_alive, wait_for


def procs(path):
    """Pids in ``path`` and every cgroup below it."""
    pids = []
    for root, _dirs, _files in os.walk(path):
        try:
            with open(os.path.join(root, "cgroup.procs")) as f:
                pids += [int(l) for l in f if l.strip()]
        except OSError:
            continue
    return pids


def populated(path):
    """True while any process lives in ``path`` or below (cgroup.events)."""
    try:
        with open(os.path.join(path, "cgroup.events")) as f:
            for line in f:
                k, v = line.split()
                if k == "populated":
                    return v == "1"
    except OSError:
        return bool(procs(path))
    return False


def kill_all(path, timeout=10.0):
    """SIGKILL every process in ``path`` and below; wait until it is empty."""
    if not os.path.isdir(path):
        return
    kill_file = os.path.join(path, "cgroup.kill")
    if os.path.exists(kill_file):
        with open(kill_file, "w") as f:
            f.write("1")
    else:  # before Linux 5.14: kill what is there until nothing is left
        for pid in procs(path):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def empty():
        if os.path.exists(kill_file):
            return not populated(path)
        left = [p for p in procs(path) if pid_alive(p)]
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return not left

    wait_for(empty, timeout, f"cgroup {path} to empty after kill")


def remove_tree(path, timeout=10.0):
    """Kill everything in ``path`` and rmdir it and its children bottom-up."""
    if not os.path.isdir(path):
        return
    kill_all(path, timeout)
    deadline = time.monotonic() + timeout
    for root, dirs, _files in os.walk(path, topdown=False):
        for d in dirs:
            _rmdir(os.path.join(root, d), deadline)
    _rmdir(path, deadline)


def _rmdir(path, deadline):
    # A cgroup whose last process just died can stay busy for a moment.
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def make(path):
    os.makedirs(path, exist_ok=True)
    return path
