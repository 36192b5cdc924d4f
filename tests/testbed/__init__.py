# SPDX-License-Identifier: Apache-2.0
"""testbed: a simulated Kubernetes node for h2split's integration tests and demo.

Import with ``tests/`` on sys.path (tests/integration/conftest.py does it)::

    import testbed
    with testbed.Node() as node:                      # or node.setup() ... node.teardown()
        s0, s1 = node.add_pod("server-0"), node.add_pod("server-1")
        for p in (s0, s1):
            p.start_grpc_server()                     # Echo on [::]:50051, waits until ready
        svc = node.add_service("echo", 50051, pods=[s0, s1], family="dual")
        c = node.add_pod("client-0").grpc_client(svc.target4)   # ONE long-lived channel
        r = c.unary(100)                              # {"pods": {"server-1": 100}, ...}
        node.add_pod("server-2").start_grpc_server()
        node.set_endpoints(svc, ["server-0", "server-1", "server-2"])
        r = c.unary(100)                              # same channel, same pod (the problem)

Topology (prefix "h2st", env H2S_TESTBED_PREFIX overrides; [a-z][a-z0-9]{0,7})
  node netns ``h2st-node``: lo up with 169.254.1.1/32 and fd00:10:1::1/128,
    forwarding on (this netns only), routes 10.96.0.0/16 and fd00:10:96::/112
    via lo (so node processes can reach ClusterIPs), kube-proxy rules.
  pod netns ``h2st-<pod>``: eth0 with 10.244.0.<n>/32 and fd00:10:244::<n>/128
    (n = pod index 1..254, same digits in both), ``default via 169.254.1.1
    dev eth0 onlink`` and ``default via fe80::1 dev eth0``; node-side veth
    ``h2st<n>`` with fe80::1/64, proxy_arp, /32 and /128 routes (Calico style,
    so every packet between pods crosses the node's netfilter).
  Services: ClusterIP 10.96.0.<m> and/or fd00:10:96::<m>; iptables and
    ip6tables nat rules in the node netns shaped like kube-proxy's
    (KUBE-SERVICES from PREROUTING and OUTPUT, KUBE-SVC-<hash> per service,
    KUBE-SEP-<hash> per endpoint with ``-m statistic --mode random
    --probability 1/n, 1/(n-1), ...``, DNAT; masquerade for hairpin; REJECT
    in filter for services without endpoints). Endpoint changes rewrite the
    chains (iptables-restore --noflush); open connections stay (conntrack).
  cgroup v2 (mount found from /proc/self/mounts): ``<mnt>/h2st`` with
    ``pods/<pod>`` per pod and ``node`` for node processes (h2splitd).
    Attach BPF to ``node.pods_cgroup`` only.
  bpffs: mounted at /sys/fs/bpf if missing; pin root ``node.bpffs``
    (/sys/fs/bpf/h2st). Work dir ``node.workdir`` (/run/h2st): logs/,
    services.json.
  Cleanup (setup does it first, teardown last, or ``python3 -m
  testbed.cleanup [PREFIX] [--force]``): kill everything in the cgroups and
  the netns, delete the netns, the pin dir, the cgroups, leftover host
  veths, the work dir. Works after a run killed -9 midway.
  One live bed per prefix per machine: a bed holds /run/<prefix>.lock
  (flock, freed even by SIGKILL); a second run waits for it up to
  H2S_TESTBED_LOCK_WAIT seconds (600) instead of wiping it, and one process
  cannot set up two beds with the same prefix. H2S_TESTBED_LOGS=DIR keeps a
  copy of every bed's process logs there at teardown.

API
  ``Node(prefix=None, services_file=None)``; ``.setup() -> Node``,
  ``.teardown()``, context manager. Attributes: ``netns``, ``cgroup_root``,
  ``pods_cgroup``, ``node_cgroup``, ``bpffs``, ``workdir``, ``logdir``,
  ``services_file``, ``pods`` {name: Pod}, ``services`` {name: Service}.
    ``add_pod(name) -> Pod``; ``remove_pod(name)`` (also leaves every Service).
    ``add_server_pods(names, port=50051, delay_ms=0, args=()) -> [Pod]``: pods
      with a gRPC server each, started in parallel.
    ``add_service(name, port=50051, target_port=None, pods=(), family=4|6|"dual",
      namespace="default", port_name="grpc", app_protocol="kubernetes.io/h2c",
      annotations=None, terminating=(), not_ready=()) -> Service``
    ``set_endpoints(svc, pods, terminating=(), not_ready=())``: pods/svc by object
      or name. ``remove_service(svc)``. ``update_service(svc, **fields)`` (e.g.
      ``annotations={...}``, ``app_protocol=None``, ``port_name=...``).
      Every change returns only once each running h2splitd that reads
      ``services_file`` (file discovery; noticed when started with ``popen``)
      reports the file as written applied in all its workers: ``wait_applied()``
      (deadline H2S_APPLY_TIMEOUT, 60 s, then TimeoutError with the daemon's
      log tail); ``file_version`` is the "sha256:<hex>" it waits for,
      ``daemon_applied(admin) -> (generation, version)``.
    ``write_services_file(path=None)``: atomic write of the kubectl-style JSON
      (``kubectl get svc,endpointslices -o json``); ``services_file`` is rewritten
      on every change anyway. ``services_doc()`` returns the same as a dict.
    ``nat_rules(family=4) -> str``, ``iptables_save(family, table=None)``,
      ``sysctl(key)``, ``daemon_args(admin=...)`` (h2splitd flags for this bed),
      ``start_daemon(binary, args=None, extra_args=(), health_url=...) -> Proc``
      (in the node netns + node cgroup; waits for the admin /healthz),
      ``logs()`` (tails of every process log).
  Node and Pod are both places to run things (netns + cgroup):
    ``popen(cmd, name=None, watch=False, stop_signal=SIGTERM, env=None, **popen_kw)
      -> Proc`` (a subprocess.Popen: ``.log_path``, ``.lines``, ``.next_line(t)``,
      ``.wait_line(regex, t)``, ``.log_tail()``, ``.stop()``); stopped at teardown.
    ``run(cmd, timeout=30, check=True, input=None) -> CompletedProcess``.
    ``argv(cmd)``: the nsenter argv, for your own subprocess calls.
    ``start_grpc_server(port=50051, delay_ms=0, args=(), wait=True) -> Proc``
      (accepting on return).
    ``grpc_client(target, options=None, metadata=None) -> Client``.
    ``procs()``: pids in its cgroup.
  ``Pod``: ``.name .index .ip4 .ip6 .netns .cgroup .veth .server``, ``.kill()``
    (SIGKILL all its processes; netns stays).
  ``Service``: ``.name .namespace .port .target_port .vip4 .vip6 .families
    .endpoints`` [Endpoint(pod, ready, serving, terminating)] ``.ready_pods
    .target(family=None) .target4 .target6 .svc_chain(family)``.
  ``Client`` (testbed/client.py): ``.unary(n=1, **request) .server_stream(count)
    .client_stream(n) .bidi(n) .start(cmd, n, **request) -> id .wait(id)
    .stats() .connect() .state() .command(line) .send(line) .receive()
    .loop(pace_ms, fresh=False, **request) -> id .progress() .wait_progress(more)
    .stop_loop(id) .close()``; ``open_clients(places, target) -> [Client]`` and
    ``unary_all(clients, n, **request) -> [summary]`` run many at once. Each returns the
    summary dict: n, ok, messages, pods {pod: messages}, peers, errors
    {CODE: n}, details, initial, trailers, bytes, last, ms.
    Request keys (echo.py): size, count, delay_ms, status, message, echo;
    client keys: metadata, rpc_timeout, concurrency, wait_for_ready, req_size.
  ``wait_for(predicate, timeout=10, what="...")``: poll with a deadline, return
    the truthy value, raise TimeoutError naming ``what``. No fixed sleeps.
  ``peer_addr("ipv4:10.244.0.4:41234") -> ("10.244.0.4", 41234)`` (also ipv6).
  ``cleanup(prefix=None)``, ``leftovers(prefix) -> dict`` (empty when clean).
  ``TestbedError``: a bed operation failed (message names command and output).

Programs (run them in a place with ``python()`` and ``-m``):
  ``testbed.grpc_server --pod NAME --port 50051 [--delay-ms N] [--grace S]
    [--max-concurrent-streams N] [--workers N] [--fail-status N [--fail-every K]]``:
    service h2split.test.Echo (Unary, ServerStream, ClientStream, Bidi, Stats),
    prints "ready ..."; --fail-status fails every RPC (every K-th) with that
    status until SIGUSR1.
  ``testbed.grpc_client --target HOST:PORT (--count N | --interactive)``.
  ``testbed.kube_api``: a fake Kubernetes API server (HTTPS, throwaway CA) with
    list/watch, bookmarks, 410 Gone, dropped/silent watches and token rotation
    for the Kubernetes discovery source (``KubeAPIProcess`` runs it in a bed).
"""

from .bed import GATEWAY4, GATEWAY6, GRPC_PORT, NODE_IP6, Node, Pod, check_environment
from .sweep import cleanup, leftovers
from .client import Client, open_clients, unary_all
from .echo import peer_addr
from .kube import Endpoint, Service
from .proc import Proc
from .util import StopWaiting, TestbedError, cgroup2_mount, python, sanitized, wait_for

__all__ = ["Node", "Pod", "Service", "Endpoint", "Client", "Proc", "TestbedError",
           "open_clients", "unary_all", "peer_addr",
           "wait_for", "StopWaiting", "sanitized", "cleanup", "leftovers", "cgroup2_mount", "python",
           "check_environment", "GATEWAY4", "GATEWAY6", "NODE_IP6", "GRPC_PORT"]
