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
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import testbed  # noqa: E402

N_SERVERS = 3
N_CLIENTS = 6
RPCS = 60  # per client per round
BAR = 40
DAEMON_LISTEN = "169.254.20.11:15001"  # h2splitd's default --listen


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
        self.daemon = None
        self.history = []  # [(title, {client: {pod: n}})], for the chart

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

    def round(self, title, label=None):
        """RPCS unary RPCs on every channel at once; print and return {client: {pod: n}}."""
        results = testbed.unary_all(self.clients, RPCS)
        table = {}
        self.failed = 0
        for pod, r in zip(self.client_pods, results):
            if r["errors"]:
                print(Style.bad(f"  {pod.name}: errors {r['errors']} {r['details'][:2]}"))
            self.failed += sum(r["errors"].values())
            table[pod.name] = r["pods"]
        show(title, table, [s.name for s in self.servers])
        self.history.append((label or title, table))
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
    table = demo.round("phase 1: kube-proxy alone, RPCs per client and pod",
                       "kube-proxy")
    pinned = all(len(p) == 1 for p in table.values())
    demo.pinned = {c: next(iter(p)) for c, p in table.items() if len(p) == 1}
    return verdict(pinned and not demo.failed,
                   "every client's RPCs all went to ONE pod (its connection's)",
                   "some channel spread its RPCs over pods without h2split")


def phase_scale_out(demo):
    """Before: scaling out does not help channels that are already open."""
    new = demo.add_server()
    print(f"scaled out: {new.name} ({new.ip4}) added to the Service's endpoints\n")
    table = demo.round(f"phase 2: after scale-out to {len(demo.servers)} pods, same channels",
                       "kube-proxy, scaled out")
    idle = all(new.name not in p for p in table.values())
    same = all(len(p) == 1 and next(iter(p)) == demo.pinned.get(c) for c, p in table.items())
    return verdict(idle and same and not demo.failed,
                   f"{new.name} got 0 RPCs; every client stayed on its pod",
                   f"{new.name} got traffic or a client moved without h2split")


def start_h2splitd(demo, name="h2splitd"):
    d = demo.node.popen([os.path.join(demo.build, "h2splitd"), *demo.node.daemon_args()],
                        name=name, watch=True, stderr=subprocess.STDOUT)
    d.wait_line(r"msg=redirecting", 20)
    return d


def adopted(demo):
    """h2split_adopted_connections_total{result="idle"} of the running h2splitd."""
    r = demo.node.run(["curl", "-sS", "--max-time", "5", "http://127.0.0.1:9901/metrics"],
                      check=False)
    for line in r.stdout.splitlines():
        if line.startswith('h2split_adopted_connections_total{result="idle"} '):
            return int(float(line.split()[-1]))
    return 0


def direct(pod, demo):
    """The pod's connections straight to the ClusterIP (kube-proxy's)."""
    return pod.run(["ss", "-Htn", "state", "established", "dst",
                    demo.svc.target4]).stdout.strip()


def wait_adopted(demo):
    """Wait until h2splitd closed every client's direct connection (while
    idle: the channel's next RPC connects through h2splitd); the seconds it
    took."""
    t0 = time.monotonic()
    testbed.wait_for(lambda: adopted(demo) >= len(demo.clients), 30,
                     "h2splitd to adopt every open channel")
    testbed.wait_for(lambda: not any(direct(p, demo) for p in demo.client_pods), 30,
                     "every direct connection to be closed")
    return time.monotonic() - t0


def even(table, servers, tolerance=0.15):
    """Every pod got within |tolerance| of a fair share of the round's RPCs."""
    totals = collections.Counter()
    for pods in table.values():
        totals.update(pods)
    fair = sum(totals.values()) / len(servers)
    return all(abs(totals[s.name] - fair) <= tolerance * fair for s in servers)


def phase_h2split_on(demo):
    """After: h2splitd starts on the node; the channels that are already open
    are adopted (closed while idle, so each reconnects through h2splitd), and
    from then on every RPC is balanced on its own. No client restarts."""
    demo.daemon = start_h2splitd(demo)
    secs = wait_adopted(demo)
    print("h2splitd started on the node; the clients were NOT restarted: h2splitd closed\n"
          f"each channel's connection while idle ({len(demo.clients)} channels adopted in "
          f"{secs:.1f}s), so\nthe channels reconnect, and their connects to the ClusterIP "
          "now go to h2splitd,\nwhich picks a pod per RPC\n")
    table = demo.round(f"phase 3: h2split on, {len(demo.servers)} pods, same channels",
                       "h2split")
    spread = all(len(p) > 1 for p in table.values())
    return verdict(spread and even(table, demo.servers) and not demo.failed,
                   "every client's RPCs spread over all pods, each within 15% of an even "
                   "share, on channels opened before h2splitd",
                   "RPCs were not spread evenly over the pods (or some failed)")


def phase_h2split_scale_out(demo):
    """After: a pod added while the channels are open gets traffic at once, and
    its fair share once its upstream connections are up."""
    new = demo.add_server()  # returns once h2splitd applied the new endpoint
    print(f"scaled out: {new.name} ({new.ip4}) added; the same channels stay open\n")
    first = demo.round(f"phase 4: h2split on, right after scale-out to {len(demo.servers)} pods",
                       "h2split, scaled out")
    at_once = sum(p.get(new.name, 0) for p in first.values())
    failed = demo.failed
    table = demo.round("phase 4b: the next round on the same channels", "next round")
    got = sum(p.get(new.name, 0) for p in table.values())
    failed += demo.failed
    return verdict(at_once > 0 and even(table, demo.servers) and not failed,
                   f"{new.name} took RPCs at once ({at_once}), then its share ({got}), "
                   "with no client restart",
                   f"{new.name} got {at_once}, then {got} RPCs")


def clients_to_h2splitd(pod):
    """The pod's TCP sockets still open towards h2splitd's default listener
    (established, or closed by the peer but not yet by the app)."""
    return pod.run(["ss", "-Htn", "state", "established", "state", "close-wait",
                    "dst", DAEMON_LISTEN]).stdout.strip()


def phase_fail_open(demo):
    """After: kill -9 h2splitd; connects go where the app aimed them (kube-proxy)."""
    demo.daemon.send_signal(signal.SIGKILL)
    demo.daemon.wait(10)
    # An RPC written in the very instant of the crash, before its client has
    # read the close, is lost as with any proxy that dies; what fail-open
    # promises is every RPC after that. The clients see it within milliseconds.
    testbed.wait_for(lambda: not any(clients_to_h2splitd(p) for p in demo.client_pods), 10,
                     "the clients to see their connections to h2splitd close")
    print("h2splitd killed with SIGKILL: the kernel dropped its listener from the\n"
          "liveness map, so the clients' reconnects go straight to the ClusterIP\n")
    results = testbed.unary_all(demo.clients, RPCS, wait_for_ready=True)
    table = {pod.name: r["pods"] for pod, r in zip(demo.client_pods, results)}
    failed = sum(sum(r["errors"].values()) for r in results)
    show("phase 5: h2splitd killed, same clients", table, [s.name for s in demo.servers])
    demo.history.append(("h2splitd killed", table))
    pinned = all(len(p) == 1 for p in table.values())
    return verdict(failed == 0 and pinned,
                   "every RPC succeeded through kube-proxy (pinned per connection again)",
                   f"{failed} RPCs failed after the kill")


def phase_restart(demo):
    """After: h2splitd back after the crash; the channels that went straight to
    the ClusterIP meanwhile are adopted again, without restarting a client."""
    demo.daemon = start_h2splitd(demo, "h2splitd-restarted")
    secs = wait_adopted(demo)
    print("h2splitd started again: the channels that reconnected straight to the\n"
          f"ClusterIP while it was down were adopted again ({secs:.1f}s), no client restart\n")
    table = demo.round("phase 6: h2splitd restarted, same clients", "h2splitd restarted")
    spread = all(len(p) > 1 for p in table.values())
    return verdict(spread and even(table, demo.servers) and not demo.failed,
                   "every client's RPCs spread over all pods again",
                   "RPCs were not spread again after the restart (or some failed)")


PHASES = [phase_kube_proxy, phase_scale_out, phase_h2split_on, phase_h2split_scale_out,
          phase_fail_open, phase_restart]


def write_chart(history, servers, out_dir):
    """Per-phase RPCs per pod as a PNG (gnuplot), next to its data file."""
    os.makedirs(out_dir, exist_ok=True)
    dat, png = os.path.join(out_dir, "demo.dat"), os.path.join(out_dir, "demo.png")
    with open(dat, "w") as f:
        f.write("phase " + " ".join(servers) + "\n")
        for title, table in history:
            totals = collections.Counter()
            for pods in table.values():
                totals.update(pods)
            f.write(f'"{title}" ' + " ".join(str(totals[s]) for s in servers) + "\n")
    script = (f"set terminal pngcairo size 1000,500; set output '{png}';"
              "set style data histograms; set style histogram clustered gap 1;"
              "set style fill solid border -1; set ylabel 'RPCs'; set yrange [0:*];"
              "set offsets 0,0,graph 0.08,0;"
              "set title 'h2split demo: RPCs per pod in each phase';"
              "set key outside right; set xtics rotate by -15;"
              f"plot '{dat}' using 2:xtic(1) title columnheader, " +
              ", ".join(f"'' using {i + 2} title columnheader"
                        for i in range(1, len(servers))))
    r = subprocess.run(["gnuplot", "-e", script], capture_output=True, text=True)
    if r.returncode != 0:
        print(Style.bad(f"  chart not written: gnuplot: {r.stderr.strip()[:200]}"))
        return None
    return png


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
        png = write_chart(demo.history, [s.name for s in demo.servers],
                          os.path.join(build, "demo"))
    print(Style.bold("== summary"))
    for name, ok in results:
        print(f"  {(Style.good('OK  ') if ok else Style.bad('FAIL'))} {name}")
    if png:
        print(f"  chart: {png}")
    print(Style.dim(f"  ({time.monotonic() - t0:.1f}s, test bed removed)"))
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
