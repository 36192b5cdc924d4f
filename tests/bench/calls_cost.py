# SPDX-License-Identifier: Apache-2.0
"""What the caller and method series cost in throughput, on its own (make
bench measures the same as one of its phases): h2bench.py's 10 B 4x32
closed-loop run through h2splitd, alternating a daemon with the series on
(the defaults) and one with them off (--max-callers-per-service 0
--max-methods-per-service 0), in one bed, fresh daemon per run
(Bench.calls_cost).

  calls_cost.py [--rounds 5] [--duration 3] [--warmup 1] [--json FILE]

Prints, per variant, the medians of requests/s and of requests per proxy
CPU-second (h2splitd's utime+stime), and the cost of "on" against "off".
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402
import h2bench  # noqa: E402
from benchlib import testbed  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--prefix", default="h2scost")
    ap.add_argument("--json", default=os.path.join(benchlib.build_dir(), "bench",
                                                   "calls_cost.json"))
    a = ap.parse_args(argv)
    bargs = h2bench.parse_args(["--peers", "", "--conns", "4x32", "--payloads", "10",
                                "--duration", str(a.duration), "--warmup", str(a.warmup),
                                "--skip-connect", "--prefix", a.prefix])
    benchlib.raise_fd_limit()
    with testbed.Node(prefix=a.prefix) as node:
        b = h2bench.Bench(node, bargs)
        b.backends()
        out = b.calls_cost(a.rounds)
    summary = {k: v for k, v in out.items() if k != "runs"}
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
