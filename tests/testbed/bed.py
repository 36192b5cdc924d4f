# SPDX-License-Identifier: Apache-2.0
"""The simulated node: a node netns, routed pod netns, kube-proxy rules, cgroups.

Owns every resource of one bed (named from its prefix) and every process it
started. Invariant: nothing outside the bed's own netns, cgroup dir, bpffs
pin dir and work dir is changed, except mounting bpffs when it is missing.
See ``testbed/__init__.py`` for the API overview.
"""

import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import threading

from . import cgroups, kube
from .sweep import DEFAULT_PREFIX, cleanup, paths, prefix_from_env
from .proc import Proc, log_path
from .util import (VALID_PREFIX, StopWaiting, TestbedError, child_env, ensure_bpffs, have, in_netns,
                   python, run, wait_for)

GATEWAY4 = "169.254.1.1"
GATEWAY6 = "fe80::1"
NODE_IP6 = "fd00:10:1::1"
GRPC_PORT = 50051
DEFAULT_ADMIN = "127.0.0.1:9901"
# How long a change may take to reach every worker of every h2splitd: a
# deadline for a broken daemon, never a pace (valgrind's daemon is the slowest).
APPLY_TIMEOUT = float(os.environ.get("H2S_APPLY_TIMEOUT", "60"))
POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
REQUIRED_TOOLS = ("ip", "nsenter", "iptables-restore", "ip6tables-restore", "iptables-save",
                  "ip6tables-save", "mount")

_active = {}  # prefix -> Node, to refuse two live beds with one prefix in one process
_active_lock = threading.Lock()


class _Place:
    """Somewhere to run processes: a netns plus a cgroup (the node or a pod)."""

    def __init__(self, node, name, netns, cgroup):
        self.node = node
        self.name = name
        self.netns = netns
        self.cgroup = cgroup

    def argv(self, cmd):
        """argv running ``cmd`` (list, or str for /bin/sh -c) here: netns + cgroup."""
        return in_netns(self.netns, cmd, self.cgroup)

    def popen(self, cmd, name=None, watch=False, stop_signal=signal.SIGTERM, env=None, **kw):
        """Start ``cmd`` here; returns a tracked ``Proc`` (a ``subprocess.Popen``).

        Output goes to a log file in the bed's log dir (``proc.log_path``);
        ``watch=True`` pipes stdout for ``proc.next_line()`` / ``wait_line()``.
        The bed stops it at teardown with ``stop_signal`` (then SIGKILL).
        ``env`` entries are added to the test bed's child environment.
        """
        base = name or os.path.basename(str(cmd[0] if not isinstance(cmd, str) else "sh"))
        lp = log_path(self.node.logdir, f"{self.name}-{base}")
        p = Proc(self.argv(cmd), f"{self.name}/{base}", lp, watch=watch,
                 stop_signal=stop_signal, env=child_env(env), **kw)
        self.node._track(p)
        return p

    def run(self, cmd, timeout=30, check=True, input=None):
        """Run ``cmd`` here to completion; returns CompletedProcess (text, captured).

        Raises ``TestbedError`` with the output when it fails and ``check``.
        """
        return run(self.argv(cmd), input=input, timeout=timeout, check=check,
                   env=child_env())

    def procs(self):
        """Pids currently in this place's cgroup."""
        return cgroups.procs(self.cgroup)

    def start_grpc_server(self, port=GRPC_PORT, delay_ms=0, args=(), timeout=15, wait=True):
        """Start ``testbed.grpc_server`` here (service h2split.test.Echo on [::]:port);
        return its ``Proc`` once it accepts connections (``wait=False``: at once;
        then ``proc.wait_line(r"^ready")`` before using it)."""
        cmd = [python(), "-m", "testbed.grpc_server", "--pod", self.name, "--port", str(port),
               "--delay-ms", str(delay_ms), *args]
        p = self.popen(cmd, name=f"grpc-server-{port}", watch=True)
        if wait:
            p.wait_line(r"^ready\b", timeout)
        return p

    def grpc_client(self, target, options=None, metadata=None, timeout=15):
        """Open ONE long-lived gRPC channel from here to ``target``; returns ``Client``."""
        from .client import Client
        return Client(self, target, options=options, metadata=metadata, timeout=timeout)


class Pod(_Place):
    """A pod: netns ``<prefix>-<name>``, ``eth0`` routed to the node via veth
    ``<prefix><index>``, addresses ``ip4`` / ``ip6``, cgroup ``<pods>/<name>``.
    ``server`` is the ``Proc`` of the last ``start_grpc_server()`` (or None)."""

    def __init__(self, node, name, index):
        super().__init__(node, name, f"{node.prefix}-{name}",
                         os.path.join(node.pods_cgroup, name))
        self.index = index
        self.ip4 = f"10.244.0.{index}"
        self.ip6 = f"fd00:10:244::{index}"
        self.veth = f"{node.prefix}{index}"
        self.server = None
        self.node_name = None  # nodeName its endpoints claim; None: the bed's node
        self.zone = None       # zone its endpoints claim; None: none

    def start_grpc_server(self, port=GRPC_PORT, delay_ms=0, args=(), timeout=15, wait=True):
        self.server = super().start_grpc_server(port, delay_ms, args, timeout, wait)
        return self.server

    def kill(self):
        """SIGKILL every process in the pod (a crash); the netns and addresses stay."""
        cgroups.kill_all(self.cgroup)
        self.node._reap()

    def __repr__(self):
        return f"<Pod {self.name} {self.ip4} {self.ip6}>"


class Node(_Place):
    """One simulated Kubernetes node. Use as a context manager or setup()/teardown().

    Attributes: ``prefix``, ``netns``, ``cgroup_root``, ``pods_cgroup``,
    ``node_cgroup`` (== ``cgroup``), ``bpffs``, ``workdir``, ``logdir``,
    ``services_file``, ``pods`` (name -> Pod), ``services`` (name -> Service).
    """

    def __init__(self, prefix=None, services_file=None):
        prefix = prefix or prefix_from_env() or DEFAULT_PREFIX
        if not VALID_PREFIX.match(prefix):
            raise ValueError(f"test bed prefix {prefix!r}: want [a-z][a-z0-9]{{0,7}} "
                             "(veth names are limited to 15 characters)")
        self.prefix = prefix
        p = paths(prefix)
        self.cgroup_root = p["cgroup"]
        self.pods_cgroup = os.path.join(self.cgroup_root, "pods")
        self.node_cgroup = os.path.join(self.cgroup_root, "node")
        self.bpffs = p["bpffs"]
        self.workdir = p["workdir"]
        self.logdir = os.path.join(self.workdir, "logs")
        self.services_file = services_file or os.path.join(self.workdir, "services.json")
        super().__init__(self, "node", f"{prefix}-node", self.node_cgroup)
        self.pods = {}
        self.services = {}
        self.zone = None  # this Node's zone label (set_zone); None: no Node object
        self._procs = []
        self._next_pod = 1
        self._next_svc = 1
        self._version = 1
        self._chains = {4: set(), 6: set()}
        self._up = False
        self._lock = None
        self._daemons = []  # (Proc, admin ADDR:PORT) of each h2splitd reading services_file
        self.file_version = None  # "sha256:<hex>" of services_file as last written

    # ---- lifecycle -------------------------------------------------------

    def setup(self):
        """Remove leftovers of any earlier bed with this prefix, then build the node."""
        check_environment()
        with _active_lock:
            if self.prefix in _active and _active[self.prefix] is not self:
                raise TestbedError(f"a test bed with prefix {self.prefix!r} is already up "
                                   "in this process; tear it down first")
            _active[self.prefix] = self
        try:
            self._lock = _lock_prefix(self.prefix)
        except BaseException:
            with _active_lock:
                _active.pop(self.prefix, None)
            raise
        try:
            cleanup(self.prefix)
            ensure_bpffs()
            os.makedirs(self.logdir)
            os.makedirs(self.bpffs)
            for d in (self.cgroup_root, self.pods_cgroup, self.node_cgroup):
                cgroups.make(d)
            run(["ip", "netns", "add", self.netns])
            self._sh(self.netns, f"""
                echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad
                echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad
                echo 1 > /proc/sys/net/ipv4/ip_forward
                echo 1 > /proc/sys/net/ipv6/conf/all/forwarding
                ip link set lo up
                ip addr add {GATEWAY4}/32 dev lo
                ip addr add {NODE_IP6}/128 dev lo nodad
                ip route add {kube.SVC_CIDR4} dev lo src {GATEWAY4}
                ip -6 route add {kube.SVC_CIDR6} dev lo src {NODE_IP6}
            """)
            for fam, tool in ((4, "iptables-restore"), (6, "ip6tables-restore")):
                self.run([tool, "--noflush"], input=kube.base_rules(fam))
            self._up = True
            self.write_services_file()
        except BaseException:
            self.teardown()
            raise
        return self

    def teardown(self):
        """Stop every process, delete netns, cgroups, pins and the work dir. Idempotent."""
        try:
            for p in reversed(self._procs):
                if p.poll() is None:
                    try:
                        p.send_signal(p.stop_signal)
                    except ProcessLookupError:
                        pass
            for p in reversed(self._procs):
                p.stop(timeout=3)
            self._procs.clear()
            self._save_logs()
            cleanup(self.prefix)
        finally:
            self._up = False
            self.pods.clear()
            self.services.clear()
            if self._lock:
                self._lock.close()  # releases the flock
                self._lock = None
            with _active_lock:
                if _active.get(self.prefix) is self:
                    del _active[self.prefix]

    def __enter__(self):
        return self.setup()

    def __exit__(self, *exc):
        self.teardown()
        return False

    # ---- pods ------------------------------------------------------------

    def add_pod(self, name):
        """Create pod ``name``: netns, veth, addresses, routes, cgroup. Returns the Pod."""
        if not POD_NAME.match(name) or name == "node":
            raise ValueError(f"pod name {name!r}: want a DNS label (a-z, 0-9, '-'), "
                             "at most 40 characters, not 'node'")
        if name in self.pods:
            raise ValueError(f"pod {name} exists")
        if self._next_pod > 254:
            raise TestbedError("out of pod addresses (254 per bed)")
        pod = Pod(self, name, self._next_pod)
        self._next_pod += 1
        cgroups.make(pod.cgroup)
        run(["ip", "netns", "add", pod.netns])
        self._sh(pod.netns, """
            echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad
            echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad
            ip link set lo up
        """)
        self._sh(self.netns, f"""
            ip link add {pod.veth} type veth peer name eth0 netns {pod.netns}
            ip link set {pod.veth} up
            echo 1 > /proc/sys/net/ipv4/conf/{pod.veth}/proxy_arp
            echo 1 > /proc/sys/net/ipv6/conf/{pod.veth}/proxy_ndp
            ip addr add {GATEWAY6}/64 dev {pod.veth} nodad
            ip route add {pod.ip4}/32 dev {pod.veth}
            ip -6 route add {pod.ip6}/128 dev {pod.veth}
        """)
        self._sh(pod.netns, f"""
            ip link set eth0 up
            ip addr add {pod.ip4}/32 dev eth0
            ip addr add {pod.ip6}/128 dev eth0 nodad
            ip route add default via {GATEWAY4} dev eth0 onlink
            ip -6 route add default via {GATEWAY6} dev eth0
        """)
        self.pods[name] = pod
        return pod

    def remove_pod(self, name):
        """Delete a pod: drop it from every Service's endpoints (rules and services
        file follow), kill its processes, delete its netns and cgroup."""
        pod = self.pods.pop(name if isinstance(name, str) else name.name)
        changed = False
        for svc in self.services.values():
            kept = [e for e in svc.endpoints if e.pod is not pod]
            if len(kept) != len(svc.endpoints):
                svc.endpoints = kept
                svc.resource_version = self._bump()
                changed = True
        if changed:
            self._sync()
        cgroups.kill_all(pod.cgroup)
        self._reap()
        run(["ip", "netns", "delete", pod.netns])
        cgroups.remove_tree(pod.cgroup)

    def pod(self, name):
        return self.pods[name]

    def add_server_pods(self, names, port=GRPC_PORT, delay_ms=0, args=(), timeout=15,
                        node=None, zone=None):
        """Add pods and start a gRPC server in each, in parallel; returns the Pods.
        ``node`` / ``zone``: the nodeName and zone their endpoints claim (locality
        is simulated: every pod runs here; default this node, no zone)."""
        pods = [self.add_pod(n) for n in names]
        for p in pods:
            p.node_name, p.zone = node, zone
        for p in pods:
            p.start_grpc_server(port, delay_ms, args, wait=False)
        for p in pods:
            p.server.wait_line(r"^ready\b", timeout)
        return pods

    # ---- services --------------------------------------------------------

    def add_service(self, name, port=GRPC_PORT, target_port=None, pods=(), family=4,
                    namespace="default", port_name="grpc", app_protocol="kubernetes.io/h2c",
                    annotations=None, terminating=(), not_ready=(), traffic_distribution=None,
                    internal_traffic_policy="Cluster", session_affinity="None", hints=None):
        """Create a ClusterIP Service (VIP 10.96.0.<n> and/or fd00:10:96::<n>).

        ``family``: 4, 6 or "dual". ``pods`` (Pods or names) are its ready
        endpoints; see ``set_endpoints`` for ``terminating``, ``not_ready`` and
        ``hints``. ``app_protocol=None`` leaves appProtocol out.
        ``traffic_distribution``, ``internal_traffic_policy`` and
        ``session_affinity`` are the spec fields of those names.
        """
        if name in self.services:
            raise ValueError(f"service {name} exists")
        if family not in (4, 6, "dual"):
            raise ValueError(f"family {family!r}: want 4, 6 or 'dual'")
        n = self._next_svc
        self._next_svc += 1
        svc = kube.Service(
            name=name, namespace=namespace, port=port, target_port=target_port or port,
            port_name=port_name, app_protocol=app_protocol, annotations=dict(annotations or {}),
            vip4=f"10.96.0.{n}" if family in (4, "dual") else None,
            vip6=f"fd00:10:96::{n}" if family in (6, "dual") else None,
            uid=kube.service_uid(namespace, name), resource_version=self._bump(),
            traffic_distribution=traffic_distribution,
            internal_traffic_policy=internal_traffic_policy, session_affinity=session_affinity)
        self.services[name] = svc
        self.set_endpoints(svc, pods, terminating=terminating, not_ready=not_ready, hints=hints)
        return svc

    def set_zone(self, zone):
        """Give this node a Node object with label topology.kubernetes.io/zone
        ``zone`` ("": a Node without the label; None: no Node object) in the
        services file; returns once every h2splitd applied it."""
        self.zone = zone
        self._sync()

    def set_endpoints(self, svc, pods, terminating=(), not_ready=(), hints=None):
        """Replace ``svc``'s endpoints, as the EndpointSlice controller would.

        ``pods``: ready and serving. ``terminating``: serving, terminating, not
        ready (kube-proxy uses them only when no pod is ready). ``not_ready``:
        neither. kube-proxy rules are rewritten at once; open connections stay
        on the pod they were NATed to. The services file is rewritten too.
        ``hints``: {pod name: {"forZones": [zone, ...], "forNodes": [node, ...]}}.
        Each endpoint claims its pod's ``node_name`` and ``zone``.
        """
        svc = self._svc(svc)
        hints = hints or {}

        def ep(p, **kw):
            p = self._pod(p)
            h = hints.get(p.name, {})
            return kube.Endpoint(p, node=p.node_name, zone=p.zone,
                                 for_zones=tuple(h.get("forZones", ())),
                                 for_nodes=tuple(h.get("forNodes", ())), **kw)
        eps = [ep(p) for p in pods]
        eps += [ep(p, ready=False, serving=True, terminating=True) for p in terminating]
        eps += [ep(p, ready=False, serving=False) for p in not_ready]
        svc.endpoints = eps
        svc.resource_version = self._bump()
        self._sync()
        return svc

    def remove_service(self, svc):
        svc = self._svc(svc)
        del self.services[svc.name]
        self._sync()

    def update_service(self, svc, **fields):
        """Change a Service as ``kubectl edit`` would, e.g. opt it out with
        ``annotations={"h2split.io/enabled": "false"}`` or ``app_protocol=None``;
        returns once every h2splitd of the bed applied it."""
        svc = self._svc(svc)
        for k, v in fields.items():
            if not hasattr(svc, k) or k in ("name", "namespace", "endpoints"):
                raise ValueError(f"Service field {k!r}: not a field update_service changes")
            setattr(svc, k, v)
        svc.resource_version = self._bump()
        self._sync()
        return svc

    def write_services_file(self, path=None):
        """Atomically write the kubectl-style JSON List of Services and EndpointSlices
        to ``path`` (default ``services_file``, which every change rewrites)."""
        path = path or self.services_file
        doc = kube.kubectl_list(list(self.services.values()), self.netns, self.zone)
        data = (json.dumps(doc, indent=4, sort_keys=True) + "\n").encode()  # as kubectl prints
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        if path == self.services_file:
            self.file_version = "sha256:" + hashlib.sha256(data).hexdigest()
        return path

    # ---- the daemons that read the services file -------------------------

    def daemon_applied(self, admin=DEFAULT_ADMIN):
        """(generation, version) an h2splitd in the node netns reports applied by
        every worker (admin /services), or None when it does not answer."""
        r = self.run(["curl", "-sf", "--max-time", "2", f"http://{admin}/services"],
                     check=False)
        if r.returncode != 0:
            return None
        doc = json.loads(r.stdout)
        return doc.get("generation"), doc.get("version")

    def wait_applied(self, timeout=APPLY_TIMEOUT):
        """Return once every running h2splitd that reads ``services_file`` reports
        the file as last written as applied in all its workers. A stopped
        (SIGSTOP) or exited daemon is not waited for. On timeout: TimeoutError
        with the daemon's last log lines."""
        want = self.file_version
        for proc, admin in list(self._daemons):
            def applied():
                if proc.poll() is not None or _stopped(proc.pid):
                    return True
                got = self.daemon_applied(admin)
                return got is not None and got[1] == want
            try:
                wait_for(applied, timeout, f"{proc.name} (admin {admin}) to apply {want}")
            except TimeoutError as e:
                raise TimeoutError(f"{e}; it reports {self.daemon_applied(admin)}\n"
                                   f"{proc.log_tail()}") from None

    def services_doc(self):
        """The current services-file document, as a dict."""
        return kube.kubectl_list(list(self.services.values()), self.netns, self.zone)

    # ---- node state ------------------------------------------------------

    def nat_rules(self, family=4):
        """``iptables-save -t nat`` (``ip6tables-save`` for 6) of the node netns."""
        return self.iptables_save(family, "nat")

    def iptables_save(self, family=4, table=None):
        tool = "iptables-save" if family == 4 else "ip6tables-save"
        return self.run([tool] + (["-t", table] if table else [])).stdout

    def sysctl(self, key):
        """Read a sysctl as the node netns sees it, e.g. ``net.ipv4.ip_forward``."""
        return self.run(["cat", "/proc/sys/" + key.replace(".", "/")]).stdout.strip()

    def daemon_args(self, admin="127.0.0.1:9901"):
        """The h2splitd arguments that point it at this bed."""
        return ["--discovery", "file", "--services-file", self.services_file,
                "--cgroup", self.pods_cgroup, "--bpffs", self.bpffs, "--admin", admin]

    def ctl_json(self, build_dir, *args):
        """``h2splitctl --bpffs <this bed's pin root> -o json ARGS`` from
        ``build_dir``, parsed; a non-zero exit raises with its stderr."""
        r = subprocess.run([os.path.join(build_dir, "h2splitctl"), "--bpffs", self.bpffs,
                            "-o", "json", *args], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise TestbedError(f"h2splitctl {' '.join(args)}: exit {r.returncode}: {r.stderr}")
        return json.loads(r.stdout)

    def link_ids(self):
        """{pin name: bpf_link id} of the links pinned under this bed's pin root."""
        ids = {}
        links = os.path.join(self.bpffs, "links")
        for name in os.listdir(links):
            out = subprocess.run(["bpftool", "link", "show", "pinned", os.path.join(links, name),
                                  "-j"], capture_output=True, text=True, check=True).stdout
            ids[name] = json.loads(out)["id"]
        return ids

    def start_daemon(self, binary, args=None, extra_args=(), name="h2splitd",
                     health_url="http://127.0.0.1:9901/healthz", timeout=15):
        """Start ``binary`` (h2splitd) in the node netns and node cgroup with
        ``args`` (default ``daemon_args()``) plus ``extra_args``; wait until
        ``health_url`` answers 2xx inside the node netns (None: don't wait)."""
        argv = [binary] + list(self.daemon_args() if args is None else args) + list(extra_args)
        p = self.popen(argv, name=name)

        def healthy():
            if p.poll() is not None:
                raise StopWaiting(f"{name} exited with {p.returncode}\n{p.log_tail()}")
            return self.run(["curl", "-sf", "-o", "/dev/null", "--max-time", "1",
                             health_url], check=False).returncode == 0
        if health_url:
            try:
                wait_for(healthy, timeout, f"{name} to answer {health_url}")
            except TimeoutError as e:
                raise TimeoutError(f"{e}\n{p.log_tail()}") from None
        return p

    def logs(self, n=30):
        """Tails of the logs of every process started in this bed (for failure reports)."""
        out = []
        for name in sorted(os.listdir(self.logdir)) if os.path.isdir(self.logdir) else []:
            with open(os.path.join(self.logdir, name), errors="replace") as f:
                lines = f.readlines()[-n:]
            out.append(f"--- {name} ---\n" + "".join(lines))
        return "\n".join(out)

    # ---- internals -------------------------------------------------------

    def _sh(self, netns, script):
        run(in_netns(netns, ["/bin/sh", "-ec", script]))

    def _bump(self):
        self._version += 1
        return self._version

    def _pod(self, p):
        if isinstance(p, Pod):
            return p
        try:
            return self.pods[p]
        except KeyError:
            raise KeyError(f"no pod {p!r} in the bed (have {sorted(self.pods)})") from None

    def _svc(self, s):
        return s if isinstance(s, kube.Service) else self.services[s]

    def _sync(self):
        svcs = list(self.services.values())
        for fam, tool in ((4, "iptables-restore"), (6, "ip6tables-restore")):
            text, chains = kube.iptables_restore(svcs, fam, self._chains[fam])
            self.run([tool, "--noflush"], input=text)
            self._chains[fam] = chains
        if self._up:
            self.write_services_file()
            self.wait_applied()

    def _track(self, p):
        self._procs.append(p)
        admin = _file_daemon_admin(p.args, self.services_file)
        if admin:
            self._daemons = [(q, a) for q, a in self._daemons if q.poll() is None]
            self._daemons.append((p, admin))

    def _reap(self):
        for p in self._procs:
            if p.poll() is not None:
                p._close()
        self._procs = [p for p in self._procs if p.returncode is None]

    def _save_logs(self):
        dest = os.environ.get("H2S_TESTBED_LOGS")
        if dest and os.path.isdir(self.logdir):
            import shutil
            shutil.copytree(self.logdir, os.path.join(dest, f"{self.prefix}-{os.getpid()}"),
                            dirs_exist_ok=True)


def _file_daemon_admin(argv, services_file):
    """The admin address of the h2splitd ``argv`` starts when it reads
    ``services_file`` (file discovery), else None. Wrappers (nsenter, valgrind,
    prlimit) may stand before it."""
    argv = [str(a) for a in argv]
    start = next((i for i, a in enumerate(argv) if os.path.basename(a) == "h2splitd"), None)
    if start is None:
        return None
    args = argv[start + 1:]
    opts = {}
    for i, a in enumerate(args):
        if a.startswith("--") and "=" in a:
            k, v = a.split("=", 1)
            opts[k] = v
        elif a.startswith("--") and i + 1 < len(args):
            opts.setdefault(a, args[i + 1])
    if any(a in args for a in ("--uninstall", "--version", "--help")):
        return None
    if opts.get("--discovery") != "file" or opts.get("--services-file") != services_file:
        return None
    admin = opts.get("--admin", DEFAULT_ADMIN)
    return admin or None


def _stopped(pid):
    """True when ``pid`` is stopped (SIGSTOP): it cannot apply anything."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("T", "t")
    except (OSError, IndexError):
        return False


def _lock_prefix(prefix):
    """Hold /run/<prefix>.lock (flock) while a bed is up, so two test runs on one
    machine take turns instead of cleaning up each other's bed. The kernel drops
    the lock when its holder dies, even by SIGKILL."""
    wait = float(os.environ.get("H2S_TESTBED_LOCK_WAIT", "600"))
    f = open(f"/run/{prefix}.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            wait_for(lambda: _try_flock(f), wait,
                     f"the test bed {prefix!r} held by another run (/run/{prefix}.lock; "
                     "set H2S_TESTBED_PREFIX to run beside it)", interval=0.2)
        except BaseException:
            f.close()
            raise
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def _try_flock(f):
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


_env_ok = False


def check_environment():
    """Raise TestbedError naming what is missing to build a bed here."""
    global _env_ok
    if _env_ok:
        return
    if os.geteuid() != 0:
        raise TestbedError("the test bed needs root (netns, cgroups, iptables, bpffs)")
    missing = [t for t in REQUIRED_TOOLS if not have(t)]
    if missing:
        raise TestbedError(f"missing tools {missing}: apt-get install iproute2 iptables "
                           "util-linux")
    if run([python(), "-c", "import grpc"], check=False).returncode != 0:
        raise TestbedError(f"{python()} cannot import grpc: apt-get install python3-grpcio")
    _env_ok = True
