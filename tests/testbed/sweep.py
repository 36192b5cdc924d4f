# SPDX-License-Identifier: Apache-2.0
"""Find and remove everything a test bed with a given prefix may have left behind.

Safe to run at any time and any number of times, including after a run
that was killed -9 midway: it finds leftovers by name (netns, veths,
cgroup dir, bpffs pin dir, work dir), not from any in-memory record.
By hand: ``/usr/bin/python3 -m testbed.cleanup [PREFIX] [--force]`` (cleanup.py).
"""

import os
import re
import shutil
import signal

from . import cgroups
from .util import (BPFFS_MOUNT, NETNS_DIR, TestbedError, bpffs_mounted, cgroup2_mount,
                   netns_inode, pid_alive, pids_in_netns, run, wait_for)

DEFAULT_PREFIX = "h2st"


def prefix_from_env():
    return os.environ.get("H2S_TESTBED_PREFIX", DEFAULT_PREFIX)


def paths(prefix):
    """Where a bed with ``prefix`` keeps its things (all derived from the prefix)."""
    return {
        "cgroup": os.path.join(cgroup2_mount(), prefix),
        "bpffs": os.path.join(BPFFS_MOUNT, prefix),
        "workdir": os.path.join("/run", prefix),
    }


def bed_netns(prefix):
    """Names of the bed's network namespaces present under /run/netns."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix + "-"))


def host_veths(prefix):
    """Host-netns links named like the bed's node-side veths (prefix + digits)."""
    out = run(["ip", "-o", "link", "show"]).stdout
    pat = re.compile(rf"^\d+:\s+({re.escape(prefix)}\d+)[@:]")
    return [m.group(1) for m in map(pat.match, out.splitlines()) if m]


def leftovers(prefix):
    """What of a bed still exists; an empty dict means clean."""
    p = paths(prefix)
    left = {}
    if bed_netns(prefix):
        left["netns"] = bed_netns(prefix)
    if os.path.exists(p["cgroup"]):
        left["cgroup"] = p["cgroup"]
    if os.path.exists(p["bpffs"]):
        left["bpffs"] = p["bpffs"]
    if os.path.exists(p["workdir"]):
        left["workdir"] = p["workdir"]
    if host_veths(prefix):
        left["veths"] = host_veths(prefix)
    return left


def cleanup(prefix=None):
    """Kill the bed's processes and remove its netns, cgroups, pins, veths, work dir."""
    prefix = prefix or prefix_from_env()
    p = paths(prefix)
    # 1. Processes: first everything in the bed's cgroups, then anything
    #    else still inside one of its netns (started some other way).
    cgroups.kill_all(p["cgroup"])
    names = bed_netns(prefix)
    inodes = {i for i in (netns_inode(os.path.join(NETNS_DIR, n)) for n in names) if i}
    if inodes:
        strays = pids_in_netns(inodes)
        for pid in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_for(lambda: not any(pid_alive(x) for x in strays), 10,
                 f"processes {strays} in {prefix} netns to exit")
    # 2. Network namespaces: veths, routes, iptables and conntrack go with them.
    for n in names:
        r = run(["ip", "netns", "delete", n], check=False)
        if r.returncode != 0 and os.path.exists(os.path.join(NETNS_DIR, n)):
            raise TestbedError(f"ip netns delete {n}: {r.stderr.strip()}")
    # 3. BPF pins (programs and links attached to the bed's cgroup go with it).
    if bpffs_mounted() and os.path.exists(p["bpffs"]):
        _rmtree_bpffs(p["bpffs"])
    # 4. cgroups, bottom-up.
    cgroups.remove_tree(p["cgroup"])
    # 5. Host-side veths a crashed run may have left (the bed never makes any,
    #    but a veth pair created before its move would be here).
    for v in host_veths(prefix):
        run(["ip", "link", "delete", v], check=False)
    shutil.rmtree(p["workdir"], ignore_errors=True)
    left = leftovers(prefix)
    if left:
        raise TestbedError(f"cleanup of test bed {prefix!r} left {left}")


def _rmtree_bpffs(path):
    # bpffs supports unlink and rmdir but not everything shutil.rmtree tries.
    for root, dirs, files in os.walk(path, topdown=False):
        for f in files:
            os.unlink(os.path.join(root, f))
        for d in dirs:
            os.rmdir(os.path.join(root, d))
    os.rmdir(path)
