#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""h2split demo on a simulated node: how gRPC traffic spreads over pods.

Run as root: ``H2SPLIT_BUILD=<abs build dir> /usr/bin/python3 tests/demo.py``
(``make demo`` does). One bed, several phases; each phase prints what it
did, a client x pod table and a bar chart, and says whether it behaved as
expected. Exit status 0 only if every phase did.

Adding a phase: write ``def phase_x(demo) -> bool`` using ``demo.node``,
``demo.svc``, ``demo.clients`` (long-lived channels, one per client pod),
``demo.round(title)`` (one round of RPCs on every channel, printed) and
``demo.build`` (where h2splitd lives), and append it to ``PHASES``.
"""

import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import testbed  # noqa: E402

N_SERVERS = 3
N_CLIENTS = 6
RPCS = 60  # per client per round
BAR = 40


class Style:
    on = sys.stdout.isatty() and os.environ.get("NO_COLOR") is None

    @classmethod
    def wrap(cls, code, s):
        return f"\033[{code}m{s}\033[0m" if cls.on else s

    bold = classmethod(lambda cls, s: cls.wrap("1", s))
    good = classmethod(lambda cls, s: cls.wrap("32", s))
    bad = classmethod(lambda cls, s: cls.wrap("31", s))
    dim = classmethod(lambda cls, s: cls.wrap("2", s))


class Demo:
    def __init__(self, node, build):
        self.node = node
        self.build = build
        self.servers = []
        self.svc = None
        self.client_pods = []
        self.clients = []

    def start_cluster(self):
        names = [f"server-{i}" for i in range(N_SERVERS)]
        self.servers = self.node.add_server_pods(names)
        self.svc = self.node.add_service("echo", 50051, pods=self.servers)
        self.client_pods = [self.node.add_pod(f"client-{i}") for i in range(N_CLIENTS)]
        self.clients = testbed.open_clients(self.client_pods, self.svc.target4)
        print(f"node {self.node.netns}: {N_SERVERS} server pods behind Service echo "
              f"{self.svc.target4} (kube-proxy iptables rules), {N_CLIENTS} client pods, "
              "each with ONE long-lived gRPC channel to the ClusterIP.\n")

    def add_server(self):
        pod = self.node.add_server_pods([f"server-{len(self.servers)}"])[0]
        self.servers.append(pod)
        self.node.set_endpoints(self.svc, self.servers)
        return pod

    def round(self, title):
        """RPCS unary RPCs on every channel at once; print and return {client: {pod: n}}."""
        results = testbed.unary_all(self.clients, RPCS)
        table = {}
        for pod, r in zip(self.client_pods, results):
            if r["errors"]:
                print(Style.bad(f"  {pod.name}: errors {r['errors']} {r['details'][:2]}"))
            table[pod.name] = r["pods"]
        show(title, table, [s.name for s in self.servers])
        return table


def show(title, table, servers):
    """Print a client x pod table and a per-pod bar chart."""
    print(Style.bold(f"== {title}"))
    w = max(len(s) for s in servers + ["client"]) + 2
    print("  " + "client".ljust(w) + "".join(s.rjust(w) for s in servers))
    totals = collections.Counter()
    for client, pods in table.items():
        cells = []
        for s in servers:
            n = pods.get(s, 0)
            totals[s] += n
            cells.append(str(n).rjust(w) if n else Style.dim("·".rjust(w)))
        print("  " + client.ljust(w) + "".join(cells))
    total = sum(totals.values()) or 1
    print("  " + "total".ljust(w) + "".join(str(totals[s]).rjust(w) for s in servers))
    print()
    fair = total / len(servers)
    for s in servers:
        n = totals[s]
        bar = "█" * round(BAR * n / total) if n else ""
        print(f"  {s.ljust(w)} {bar.ljust(BAR)} {n:5d} {100.0 * n / total:5.1f}%")
    print(Style.dim(f"  (an even split would be {fair:.0f} RPCs = "
                    f"{100.0 / len(servers):.1f}% per pod)"))
    print()


def verdict(ok, yes, no):
    print("  " + (Style.good("OK   " + yes) if ok else Style.bad("FAIL " + no)))
    print()
    return ok


def phase_kube_proxy(demo):
    """Before: kube-proxy alone balances connections, so each channel sticks to one pod."""
    table = demo.round("phase 1: kube-proxy alone, RPCs per client and pod")
    pinned = all(len(p) == 1 for p in table.values())
    demo.pinned = {c: next(iter(p)) for c, p in table.items() if len(p) == 1}
    return verdict(pinned, "every client's RPCs all went to ONE pod (its connection's)",
                   "some channel spread its RPCs over pods without h2split")


def phase_scale_out(demo):
    """Before: scaling out does not help channels that are already open."""
    new = demo.add_server()
    print(f"scaled out: {new.name} ({new.ip4}) added to the Service's endpoints\n")
    table = demo.round(f"phase 2: after scale-out to {len(demo.servers)} pods, same channels")
    idle = all(new.name not in p for p in table.values())
    same = all(len(p) == 1 and next(iter(p)) == demo.pinned.get(c) for c, p in table.items())
    return verdict(idle and same, f"{new.name} got 0 RPCs; every client stayed on its pod",
                   f"{new.name} got traffic or a client moved without h2split")


PHASES = [phase_kube_proxy, phase_scale_out]


def main():
    build = os.environ.get("H2SPLIT_BUILD") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build")
    try:
        testbed.check_environment()
    except testbed.TestbedError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    results = []
    with testbed.Node() as node:
        demo = Demo(node, build)
        demo.start_cluster()
        for phase in PHASES:
            try:
                ok = phase(demo)
            except Exception as e:  # report, clean up, fail
                print(Style.bad(f"  FAIL {phase.__name__}: {type(e).__name__}: {e}"))
                ok = False
            results.append((phase.__name__, ok))
    print(Style.bold("== summary"))
    for name, ok in results:
        print(f"  {(Style.good('OK  ') if ok else Style.bad('FAIL'))} {name}")
    print(Style.dim(f"  ({time.monotonic() - t0:.1f}s, test bed removed)"))
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
