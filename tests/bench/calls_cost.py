# SPDX-License-Identifier: Apache-2.0
"""What the caller and method series cost in throughput: h2bench.py's 10 B
4x32 closed-loop run through h2splitd, alternating a daemon with the series
on (the defaults) and one with them off (--max-callers-per-service 0
--max-methods-per-service 0), in one bed, fresh daemon per run.

  calls_cost.py [--rounds 5] [--duration 3] [--warmup 1] [--json FILE]

Prints, per variant, the medians of requests/s and of requests per proxy
CPU-second (h2splitd's utime+stime), and the cost of "on" against "off".
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402
import connect_cost  # noqa: E402
import h2bench  # noqa: E402
from benchlib import log, testbed  # noqa: E402

VARIANTS = {
    "on": [],
    "off": ["--max-callers-per-service", "0", "--max-methods-per-service", "0"],
}


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
    runs = {v: [] for v in VARIANTS}
    with testbed.Node(prefix=a.prefix) as node:
        b = h2bench.Bench(node, bargs)
        b.backends()
        b.urls["h2split"] = f"http://{b.svc.vip4}:{h2bench.GRPC_PORT}{h2bench.PATH}"
        for rnd in range(a.rounds):
            for v, extra in VARIANTS.items():
                p = connect_cost.start_h2splitd(node, b.build, 1, None, extra)
                b.procs["h2split"] = p
                testbed.wait_for(lambda: b.post_ok("h2split"), 20, "a call through h2splitd")
                res = b.load("h2split", 4, 32, 10, rep=rnd)
                p.stop(timeout=10)
                if "error" in res:
                    raise SystemExit(f"{v}: {res['error']}")
                res["req_per_cpu_s"] = round(sum(res["backend_requests"]) / res["cpu_s"], 1)
                runs[v].append(res)
                log(f"round {rnd} {v}: {res['req_s']} req/s, {res['req_per_cpu_s']} "
                    f"req per proxy CPU-second")
    summary = {v: {"req_s": statistics.median(r["req_s"] for r in rs),
                   "req_per_cpu_s": statistics.median(r["req_per_cpu_s"] for r in rs)}
               for v, rs in runs.items()}
    summary["cost_per_cpu_s_pct"] = round(
        100 * (1 - summary["on"]["req_per_cpu_s"] / summary["off"]["req_per_cpu_s"]), 2)
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"summary": summary, "runs": runs}, f, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
