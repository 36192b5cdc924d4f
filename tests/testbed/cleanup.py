# SPDX-License-Identifier: Apache-2.0
"""``/usr/bin/python3 -m testbed.cleanup [PREFIX] [--force]`` (from tests/): remove a bed.

Kills the bed's processes and deletes its netns, cgroups, bpffs pins, veths
and work dir (testbed/sweep.py does the work). Refuses while a live run
holds the bed's lock (/run/PREFIX.lock), unless --force.
"""

import fcntl
import sys

from testbed.sweep import cleanup, prefix_from_env


def main(argv):
    args = [a for a in argv[1:] if a != "--force"]
    prefix = args[0] if args else prefix_from_env()
    # A live bed holds /run/<prefix>.lock (see bed.py); don't pull it from under a run.
    with open(f"/run/{prefix}.lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            if "--force" not in argv:
                print(f"test bed {prefix!r} is in use (pid {holder}); "
                      "--force cleans it anyway", file=sys.stderr)
                return 1
        cleanup(prefix)
    print(f"test bed {prefix!r}: clean")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
