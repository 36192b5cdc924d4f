# SPDX-License-Identifier: Apache-2.0
"""Small helpers shared by the test bed: deadlines, host facts, commands in a netns.

Everything here is stateless. The one rule it enforces: a command "in" a
netns is started with ``nsenter --net`` (never ``ip netns exec``, which
remounts /sys and hides /sys/fs/bpf and the cgroup2 mount), and moves
itself into its cgroup before it execs, so nothing it forks escapes.
"""

import os
import re
import shutil
import subprocess
import sys
import time

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETNS_DIR = "/run/netns"
BPFFS_MOUNT = "/sys/fs/bpf"


class TestbedError(RuntimeError):
    """A test bed operation failed; the message names the command and its output."""

    __test__ = False  # not a pytest test class


def python():
    """The interpreter for test bed helpers: Debian's (it has grpcio), else ours."""
    env = os.environ.get("H2S_PYTHON")
    if env:
        return env
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def child_env(extra=None):
    """Environment for helper programs: testbed importable, output unbuffered."""
    env = dict(os.environ)
    pp = env.get("PYTHONPATH")
    env["PYTHONPATH"] = TESTS_DIR + (os.pathsep + pp if pp else "")
    env["PYTHONUNBUFFERED"] = "1"
    # gRPC honours http_proxy; nothing in the bed may go through one.
    for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "grpc_proxy"):
        env.pop(k, None)
    if extra:
        env.update(extra)
    return env


class StopWaiting(Exception):
    """Raised by a ``wait_for`` predicate: the condition can no longer come true."""


def sanitized():
    """True when the daemon under test is an ASan/UBSan build (make SANITIZE=1):
    resource bounds (CPU, RSS) are then not meaningful and are left to the plain run."""
    return os.environ.get("H2SPLIT_SANITIZE") == "1"


def wait_for(predicate, timeout=10.0, what="condition", interval=0.02):
    """Poll ``predicate()`` until it returns a truthy value; return that value.

    Raises ``TimeoutError`` naming ``what``, the timeout and the last value (or
    the last exception the predicate raised) when ``timeout`` seconds pass.
    A predicate that raises ``StopWaiting`` ends the wait at once (with that
    exception). The interval grows from ``interval`` to at most 0.2 s.
    """
    deadline = time.monotonic() + timeout
    last, last_exc = None, None
    delay = interval
    while True:
        try:
            last = predicate()
            last_exc = None
            if last:
                return last
        except StopWaiting:
            raise
        except Exception as e:  # the predicate may fail until the thing exists
            last_exc = e
        if time.monotonic() >= deadline:
            tail = f"last error: {last_exc!r}" if last_exc else f"last value: {last!r}"
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}; {tail}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def cgroup2_mount():
    """Mount point of the cgroup v2 hierarchy, read from /proc/self/mounts."""
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "cgroup2":
                return fields[1].replace("\\040", " ")
    raise TestbedError("cgroup v2 not mounted: mount -t cgroup2 none /sys/fs/cgroup")


def bpffs_mounted(path=BPFFS_MOUNT):
    with open("/proc/self/mounts") as f:
        return any(len(l.split()) >= 3 and l.split()[1] == path and l.split()[2] == "bpf"
                   for l in f)


def ensure_bpffs(path=BPFFS_MOUNT):
    """Mount bpffs at ``path`` unless it already is."""
    if bpffs_mounted(path):
        return
    os.makedirs(path, exist_ok=True)
    run(["mount", "-t", "bpf", "bpf", path])


def run(cmd, input=None, timeout=30, check=True, env=None):
    """Run ``cmd`` (a list) on the host side, capture text output, raise on failure."""
    try:
        p = subprocess.run(cmd, input=input, capture_output=True, text=True,
                           timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        raise TestbedError(f"{' '.join(cmd)}: timed out after {timeout}s") from e
    if check and p.returncode != 0:
        raise TestbedError(f"{' '.join(map(str, cmd))}: exit {p.returncode}: "
                           f"{(p.stderr or p.stdout).strip()}")
    return p


def netns_path(name):
    return os.path.join(NETNS_DIR, name)


def in_netns(netns, cmd, cgroup=None):
    """argv that runs ``cmd`` in ``netns`` (a name under /run/netns) and ``cgroup``.

    ``cmd`` is a list, or a string for ``/bin/sh -c``. With ``cgroup`` the
    shell writes its own pid to ``cgroup.procs`` and then execs the command,
    so the command and everything it forks are in that cgroup from the start.
    """
    if isinstance(cmd, str):
        cmd = ["/bin/sh", "-c", cmd]
    argv = ["nsenter", f"--net={netns_path(netns)}", "--"]
    if cgroup:
        argv += ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup]
    return argv + [str(c) for c in cmd]


def netns_inode(path):
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pids_in_netns(inodes):
    """Pids whose network namespace inode is one of ``inodes`` (never our own)."""
    found = []
    me = os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            if os.stat(f"/proc/{d}/ns/net").st_ino in inodes:
                found.append(int(d))
        except OSError:
            continue
    return found


def pid_alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except OSError:
        return False


def have(tool):
    return shutil.which(tool) is not None


VALID_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,7}$")
