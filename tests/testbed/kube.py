# SPDX-License-Identifier: Apache-2.0
"""The Kubernetes side of the bed: Services, their endpoints, and two renderings.

- ``iptables_restore()``: kube-proxy (iptables mode) rules for one family, as
  an ``iptables-restore --noflush`` input that rewrites every chain it owns
  (a declared chain is flushed, stale chains are deleted), the way
  kube-proxy syncs. Conntrack keeps existing connections where they are.
- ``kubectl_list()``: the objects as ``kubectl get svc,endpointslices -o json``
  prints them (a v1 ``List`` of ``Service`` and ``discovery.k8s.io/v1``
  ``EndpointSlice``, one slice per address family), and this node's ``Node``
  when the bed gives it a zone.

Locality is simulated: every pod runs on the one simulated node, but an
endpoint may claim another ``nodeName`` and ``zone`` (and carry hints).
"""

import base64
import hashlib
import uuid
from dataclasses import dataclass, field

POD_CIDR4 = "10.244.0.0/16"
POD_CIDR6 = "fd00:10:244::/64"
SVC_CIDR4 = "10.96.0.0/16"
SVC_CIDR6 = "fd00:10:96::/112"
CREATED = "2024-01-01T00:00:00Z"
MASQ_MARK = "0x4000"


@dataclass
class Endpoint:
    """One pod behind a Service, with the EndpointSlice conditions it shows."""
    pod: object  # testbed.Pod
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node: str = None       # nodeName; None: the bed's node
    zone: str = None       # zone; None: none written
    for_zones: tuple = ()  # hints.forZones names
    for_nodes: tuple = ()  # hints.forNodes names

    def address(self, family):
        return self.pod.ip4 if family == 4 else self.pod.ip6


@dataclass
class Service:
    """A ClusterIP Service with one TCP port.

    ``vip4`` / ``vip6`` are None for a family the Service does not have.
    ``endpoints`` is the current list of ``Endpoint`` (change it only with
    ``Node.set_endpoints``, which also rewrites rules and the services file).
    """
    name: str
    namespace: str
    port: int
    target_port: int
    port_name: str
    app_protocol: str
    annotations: dict
    vip4: str = None
    vip6: str = None
    uid: str = ""
    resource_version: int = 1
    endpoints: list = field(default_factory=list)
    traffic_distribution: str = None  # spec.trafficDistribution
    internal_traffic_policy: str = "Cluster"
    session_affinity: str = "None"

    @property
    def families(self):
        return [f for f, v in ((4, self.vip4), (6, self.vip6)) if v]

    def vip(self, family):
        return self.vip4 if family == 4 else self.vip6

    def target(self, family=None):
        """gRPC target "VIP:port" ("[VIP6]:port" for IPv6); default: first family."""
        family = family or self.families[0]
        vip = self.vip(family)
        if vip is None:
            raise ValueError(f"service {self.name} has no IPv{family} ClusterIP")
        return f"{vip}:{self.port}" if family == 4 else f"[{vip}]:{self.port}"

    @property
    def target4(self):
        return self.target(4)

    @property
    def target6(self):
        return self.target(6)

    @property
    def ready_pods(self):
        return [e.pod.name for e in self.endpoints if e.ready]

    @property
    def port_key(self):
        """kube-proxy's ServicePortName: namespace/name:portname."""
        return f"{self.namespace}/{self.name}:{self.port_name}"

    def svc_chain(self, family):
        return "KUBE-SVC-" + _hash(self.port_key + "tcp" + str(family))

    def sep_chain(self, ep, family):
        return "KUBE-SEP-" + _hash(self.port_key + "tcp" + _hostport(ep.address(family),
                                                                    self.target_port, family))

    def proxied_endpoints(self):
        """Endpoints kube-proxy sends new connections to: the ready ones, or, when
        none is ready, the serving terminating ones (kube-proxy >= 1.26)."""
        ready = [e for e in self.endpoints if e.ready]
        if ready:
            return ready
        return [e for e in self.endpoints if e.serving and e.terminating]


def _hash(s):
    # kube-proxy: base32(sha256(...))[:16]
    return base64.b32encode(hashlib.sha256(s.encode()).digest()).decode()[:16]


def _hostport(ip, port, family):
    return f"{ip}:{port}" if family == 4 else f"[{ip}]:{port}"


def _plen(family):
    return "/32" if family == 4 else "/128"


def base_rules(family):
    """Chains and jumps installed once when the node is set up."""
    return "\n".join([
        "*nat",
        ":KUBE-SERVICES - [0:0]",
        ":KUBE-POSTROUTING - [0:0]",
        ":KUBE-MARK-MASQ - [0:0]",
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" '
        '-j KUBE-POSTROUTING',
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}",
        f"-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
        "COMMIT",
        "*filter",
        ":KUBE-SERVICES - [0:0]",
        '-A FORWARD -m conntrack --ctstate NEW -m comment --comment '
        '"kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m conntrack --ctstate NEW -m comment --comment '
        '"kubernetes service portals" -j KUBE-SERVICES',
        "COMMIT",
        "",
    ])


def iptables_restore(services, family, stale_chains=()):
    """``iptables-restore --noflush`` input syncing every Service for ``family``.

    Returns (text, chains): ``chains`` is the set of KUBE-SVC/SEP chains the
    text installs; pass it back as ``stale_chains`` next time so chains that
    are no longer needed get flushed and deleted.
    """
    reject = "icmp-port-unreachable" if family == 4 else "icmp6-port-unreachable"
    nat_decl, nat_rules, filt_rules = [":KUBE-SERVICES - [0:0]"], [], []
    chains = set()
    for svc in services:
        vip = svc.vip(family)
        if not vip:
            continue
        eps = svc.proxied_endpoints()
        if not eps:
            filt_rules.append(
                f'-A KUBE-SERVICES -d {vip}{_plen(family)} -p tcp -m comment --comment '
                f'"{svc.port_key} has no endpoints" -m tcp --dport {svc.port} '
                f"-j REJECT --reject-with {reject}")
            continue
        svc_chain = svc.svc_chain(family)
        chains.add(svc_chain)
        nat_decl.append(f":{svc_chain} - [0:0]")
        nat_rules.append(
            f'-A KUBE-SERVICES -d {vip}{_plen(family)} -p tcp -m comment --comment '
            f'"{svc.port_key} cluster IP" -m tcp --dport {svc.port} -j {svc_chain}')
        n = len(eps)
        for i, ep in enumerate(eps):
            addr = ep.address(family)
            hp = _hostport(addr, svc.target_port, family)
            sep = svc.sep_chain(ep, family)
            chains.add(sep)
            nat_decl.append(f":{sep} - [0:0]")
            prob = "" if i == n - 1 else \
                f"-m statistic --mode random --probability {1.0 / (n - i):0.11f} "
            nat_rules.append(f'-A {svc_chain} -m comment --comment "{svc.port_key} -> {hp}" '
                             f"{prob}-j {sep}")
            nat_rules.append(f'-A {sep} -s {addr}{_plen(family)} -m comment --comment '
                             f'"{svc.port_key}" -j KUBE-MARK-MASQ')
            nat_rules.append(f'-A {sep} -p tcp -m comment --comment "{svc.port_key}" '
                             f"-m tcp -j DNAT --to-destination {hp}")
    stale = sorted(set(stale_chains) - chains)
    nat_decl += [f":{c} - [0:0]" for c in stale]
    text = "\n".join(["*nat"] + nat_decl + nat_rules + [f"-X {c}" for c in stale] +
                     ["COMMIT", "*filter", ":KUBE-SERVICES - [0:0]"] + filt_rules +
                     ["COMMIT", ""])
    return text, chains


def service_uid(namespace, name):
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"h2st/service/{namespace}/{name}"))


def _service_obj(svc):
    fams = svc.families
    ips = [svc.vip(f) for f in fams]
    port = {"name": svc.port_name, "port": svc.port, "protocol": "TCP",
            "targetPort": svc.target_port}
    if svc.app_protocol:
        port["appProtocol"] = svc.app_protocol
    meta = {"creationTimestamp": CREATED, "name": svc.name, "namespace": svc.namespace,
            "resourceVersion": str(svc.resource_version), "uid": svc.uid}
    if svc.annotations:
        meta["annotations"] = dict(svc.annotations)
    obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "clusterIP": ips[0],
            "clusterIPs": ips,
            "internalTrafficPolicy": svc.internal_traffic_policy,
            "ipFamilies": ["IPv4" if f == 4 else "IPv6" for f in fams],
            "ipFamilyPolicy": "RequireDualStack" if len(fams) == 2 else "SingleStack",
            "ports": [port],
            "selector": {"app": svc.name},
            "sessionAffinity": svc.session_affinity,
            "type": "ClusterIP",
        },
        "status": {"loadBalancer": {}},
    }
    if svc.session_affinity == "ClientIP":
        obj["spec"]["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 10800}}
    if svc.traffic_distribution:
        obj["spec"]["trafficDistribution"] = svc.traffic_distribution
    return obj


def _slice_obj(svc, family, node_name):
    port = {"name": svc.port_name, "port": svc.target_port, "protocol": "TCP"}
    if svc.app_protocol:
        port["appProtocol"] = svc.app_protocol
    eps = []
    for ep in svc.endpoints:
        e = {
            "addresses": [ep.address(family)],
            "conditions": {"ready": ep.ready, "serving": ep.serving,
                           "terminating": ep.terminating},
            "nodeName": ep.node or node_name,
            "targetRef": {"kind": "Pod", "name": ep.pod.name, "namespace": svc.namespace,
                          "uid": str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                f"h2st/pod/{ep.pod.name}"))},
        }
        if ep.zone:
            e["zone"] = ep.zone
        hints = {}
        if ep.for_zones:
            hints["forZones"] = [{"name": z} for z in ep.for_zones]
        if ep.for_nodes:
            hints["forNodes"] = [{"name": n} for n in ep.for_nodes]
        if hints:
            e["hints"] = hints
        eps.append(e)
    name = f"{svc.name}-{'ipv4' if family == 4 else 'ipv6'}"
    return {
        "addressType": "IPv4" if family == 4 else "IPv6",
        "apiVersion": "discovery.k8s.io/v1",
        # kubectl prints null, not [], for a slice with no endpoints.
        "endpoints": eps or None,
        "kind": "EndpointSlice",
        "metadata": {
            "creationTimestamp": CREATED,
            "generateName": f"{svc.name}-",
            "labels": {"endpointslice.kubernetes.io/managed-by":
                       "endpointslice-controller.k8s.io",
                       "kubernetes.io/service-name": svc.name},
            "name": name,
            "namespace": svc.namespace,
            "ownerReferences": [{"apiVersion": "v1", "blockOwnerDeletion": True,
                                 "controller": True, "kind": "Service", "name": svc.name,
                                 "uid": svc.uid}],
            "resourceVersion": str(svc.resource_version),
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"h2st/slice/{svc.namespace}/{name}")),
        },
        "ports": [port],
    }


def node_obj(node_name, zone):
    """This node's ``Node`` object; ``zone`` "" leaves the zone label out."""
    labels = {"kubernetes.io/hostname": node_name, "kubernetes.io/os": "linux"}
    if zone:
        labels["topology.kubernetes.io/zone"] = zone
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"creationTimestamp": CREATED, "labels": labels, "name": node_name,
                         "resourceVersion": "1",
                         "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"h2st/node/{node_name}"))},
            "spec": {}, "status": {}}


def kubectl_list(services, node_name="h2st-node", node_zone=None):
    """The ``kubectl get svc,endpointslices -o json`` document for ``services``
    (plus ``kubectl get node``'s when ``node_zone`` is not None)."""
    items = [_service_obj(s) for s in services]
    for s in services:
        items += [_slice_obj(s, f, node_name) for f in s.families]
    if node_zone is not None:
        items.append(node_obj(node_name, node_zone))
    return {"apiVersion": "v1", "items": items, "kind": "List",
            "metadata": {"resourceVersion": ""}}
