# SPDX-License-Identifier: Apache-2.0
"""A fake Kubernetes API server for tests: HTTPS list+watch of Services,
EndpointSlices, Namespaces and Pods, with the failure modes a client must
survive (expired resourceVersions, dropped or silent watches, token rotation).

Stdlib only (http.server + ssl); a throwaway CA and server certificate are made
with the ``openssl`` CLI in a temp dir at start. Field shapes of lists, watch
events, Status objects and the objects built by ``service()``,
``endpoint_slice()``, ``namespace()`` and ``pod()`` are copied from the
published Kubernetes API reference (core/v1 Service, Namespace, Pod, Status,
WatchEvent; discovery.k8s.io/v1 EndpointSlice): list items carry no
kind/apiVersion, watch event objects do, every object has
metadata.resourceVersion from one cluster-wide counter (etcd's revision).

In-process::

    api = KubeAPI().start()          # api.url, api.ca_file, api.token_file
    api.apply("services", service("echo", "default", "10.96.0.10", 50051))
    api.delete("services", "default", "echo")
    api.expire_resource_versions()   # every watch gets ERROR 410, lists relist
    api.always_expire("services")    # ... and so does every later watch (410 forever)
    api.drop_watches()               # cut watch connections mid-stream
    api.stall_watches()              # open watches go silent (no bookmarks)
    api.rotate_token()               # new token file; the old token is refused
    api.send_raw("watch", "services", '{"type":"MODIFIED","obj')  # garbage to open watches
    api.send_raw("list", "services", '{"kind":"ServiceList","items":[')  # as the next list
    api.stop()

As a process (e.g. inside a test bed netns), commands as JSON lines on stdin::

    python3 tests/testbed/kube_api.py --host 127.0.0.1 --dir DIR
    -> {"ready": true, "url": ..., "ca_file": ..., "token_file": ...}
    <- {"op": "apply", "kind": "services", "obj": {...}}   -> {"ok": true, ...}

``KubeAPIProcess`` (below) drives such a process with the same methods.
"""

import argparse
import base64
import copy
import http.server
import json
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

RESOURCES = {
    # resource -> (path, kind, apiVersion, namespaced)
    "services": ("/api/v1/services", "Service", "v1", True),
    "endpointslices": ("/apis/discovery.k8s.io/v1/endpointslices", "EndpointSlice",
                       "discovery.k8s.io/v1", True),
    "namespaces": ("/api/v1/namespaces", "Namespace", "v1", False),
    "pods": ("/api/v1/pods", "Pod", "v1", True),
    "nodes": ("/api/v1/nodes", "Node", "v1", False),
}
KIND_TO_RESOURCE = {v[1]: k for k, v in RESOURCES.items()}
PATH_TO_RESOURCE = {v[0]: k for k, v in RESOURCES.items()}
CREATED = "2024-01-01T00:00:00Z"


def resource_of(kind):
    """'services', 'Service' -> 'services'."""
    if kind in RESOURCES:
        return kind
    if kind in KIND_TO_RESOURCE:
        return KIND_TO_RESOURCE[kind]
    raise ValueError(f"unknown kind {kind!r}: one of {sorted(RESOURCES)}")


def status(code, reason, message):
    """A meta/v1 Status, as the API server sends for errors."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


# ---- object builders (shapes from the API reference) ----

def service(name, namespace="default", cluster_ip="10.96.0.10", port=50051, target_port=None,
            port_name="grpc", app_protocol="kubernetes.io/h2c", annotations=None):
    """A core/v1 ClusterIP Service with one TCP port (clusterIP may be a list)."""
    ips = cluster_ip if isinstance(cluster_ip, list) else [cluster_ip]
    p = {"name": port_name, "port": port, "protocol": "TCP",
         "targetPort": target_port or port}
    if app_protocol:
        p["appProtocol"] = app_protocol
    meta = {"name": name, "namespace": namespace, "creationTimestamp": CREATED,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"svc/{namespace}/{name}"))}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {
        "kind": "Service", "apiVersion": "v1", "metadata": meta,
        "spec": {"clusterIP": ips[0], "clusterIPs": ips, "internalTrafficPolicy": "Cluster",
                 "ipFamilies": ["IPv6" if ":" in ip else "IPv4" for ip in ips],
                 "ipFamilyPolicy": "RequireDualStack" if len(ips) > 1 else "SingleStack",
                 "ports": [p], "selector": {"app": name}, "sessionAffinity": "None",
                 "type": "ClusterIP"},
        "status": {"loadBalancer": {}},
    }


def endpoint_slice(service_name, namespace="default", addresses=(), port=50051,
                   port_name="grpc", address_type="IPv4", name=None, node_name="test-node",
                   app_protocol="kubernetes.io/h2c", not_ready=()):
    """A discovery.k8s.io/v1 EndpointSlice for ``service_name``; ``addresses`` is a list
    of IPs or of (ip, pod_name) pairs."""
    eps = []
    for a in addresses:
        ip, pod_name = a if isinstance(a, tuple) else (a, None)
        ready = ip not in not_ready
        ep = {"addresses": [ip],
              "conditions": {"ready": ready, "serving": ready, "terminating": False},
              "nodeName": node_name}
        if pod_name:
            ep["targetRef"] = {"kind": "Pod", "name": pod_name, "namespace": namespace,
                               "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pod/{pod_name}"))}
        eps.append(ep)
    p = {"name": port_name, "port": port, "protocol": "TCP"}
    if app_protocol:
        p["appProtocol"] = app_protocol
    name = name or f"{service_name}-{address_type.lower()}"
    return {
        "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "addressType": address_type,
        "endpoints": eps,
        "metadata": {
            "name": name, "namespace": namespace, "generateName": f"{service_name}-",
            "creationTimestamp": CREATED,
            "labels": {"endpointslice.kubernetes.io/managed-by":
                       "endpointslice-controller.k8s.io",
                       "kubernetes.io/service-name": service_name},
            "ownerReferences": [{"apiVersion": "v1", "blockOwnerDeletion": True,
                                 "controller": True, "kind": "Service",
                                 "name": service_name,
                                 "uid": str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                       f"svc/{namespace}/{service_name}"))}],
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"slice/{namespace}/{name}")),
        },
        "ports": [p],
    }


def namespace(name, labels=None):
    """A core/v1 Namespace (with the kubernetes.io/metadata.name label it always has)."""
    lab = {"kubernetes.io/metadata.name": name}
    lab.update(labels or {})
    return {"kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": name, "labels": lab, "creationTimestamp": CREATED,
                         "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"ns/{name}"))},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}


def node(name, zone=None):
    """A core/v1 Node, with label topology.kubernetes.io/zone ``zone`` unless None."""
    labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
    if zone is not None:
        labels["topology.kubernetes.io/zone"] = zone
    return {"kind": "Node", "apiVersion": "v1",
            "metadata": {"name": name, "labels": labels, "creationTimestamp": CREATED,
                         "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"node/{name}"))},
            "spec": {}, "status": {}}


def pod(name, namespace="default", uid=None, node_name="test-node", annotations=None,
        qos_class="BestEffort", phase="Running", pod_ip="10.244.0.9"):
    """A core/v1 Pod scheduled on ``node_name``."""
    meta = {"name": name, "namespace": namespace, "creationTimestamp": CREATED,
            "uid": uid or str(uuid.uuid5(uuid.NAMESPACE_URL, f"pod/{namespace}/{name}"))}
    if annotations:
        meta["annotations"] = dict(annotations)
    return {"kind": "Pod", "apiVersion": "v1", "metadata": meta,
            "spec": {"containers": [{"name": "app", "image": "app:1"}],
                     "nodeName": node_name, "restartPolicy": "Always"},
            "status": {"phase": phase, "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
                       "qosClass": qos_class}}


# ---- certificates ----

def _openssl(args, cwd):
    p = subprocess.run(["openssl"] + args, cwd=cwd, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {p.stderr.strip()}")


def make_ca(d, name):
    _openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
              "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
              "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)
    return os.path.join(d, f"{name}.crt")


def make_server_cert(d, ca, sans):
    with open(os.path.join(d, "server.ext"), "w") as f:
        f.write("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
                f"subjectAltName={','.join(sans)}\n")
    _openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
              "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=kube-apiserver"], d)
    _openssl(["x509", "-req", "-in", "server.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
              "-CAcreateserial", "-out", "server.crt", "-days", "2",
              "-extfile", "server.ext"], d)
    return os.path.join(d, "server.crt"), os.path.join(d, "server.key")


# ---- the server ----

class _Watch:
    """One open watch stream (owned by its handler thread)."""

    def __init__(self, resource, handler):
        self.resource = resource
        self.handler = handler
        self.dropped = False
        self.stalled = False
        self.expired = False
        self.raw = []  # lines to send as they are (send_raw)


class KubeAPI:
    """The fake API server. Thread-safe; every mutator emits watch events."""

    def __init__(self, host="127.0.0.1", port=0, workdir=None, bookmark_interval=1.0,
                 cert_ips=None):
        self.host = host
        self.port = port
        self.bookmark_interval = bookmark_interval
        self._cert_ips = cert_ips or [host]
        self._own_dir = workdir is None
        self.dir = workdir or tempfile.mkdtemp(prefix="h2s-kube-api-")
        os.makedirs(self.dir, exist_ok=True)
        self.ca_file = os.path.join(self.dir, "ca.crt")
        self.other_ca_file = os.path.join(self.dir, "other-ca.crt")  # signs nothing here
        self.token_file = os.path.join(self.dir, "token")
        self._cond = threading.Condition()
        self._rv = 100
        self._compacted = 0  # watches from below this revision get 410
        self._objects = {r: {} for r in RESOURCES}  # resource -> {(ns, name): obj}
        self._events = []  # (rv, resource, type, obj)
        self._watches = set()
        self._snapshots = {}  # continue token -> remaining items
        self._tokens = set()
        self._forbidden = set()  # resources the token may not read (RBAC)
        self._raw_lists = {}  # resource -> raw bodies the next lists answer with
        self._always_expired = set()  # resources whose every watch gets 410 at once
        self.requests = []  # (method, path, query dict, status, time.monotonic()) of each
        self._server = None
        self._thread = None
        self._stopping = False

    # -- lifecycle --

    def start(self):
        make_ca(self.dir, "ca")
        make_ca(self.dir, "other-ca")
        sans = [f"IP:{ip}" for ip in self._cert_ips] + ["DNS:localhost"]
        crt, key = make_server_cert(self.dir, "ca", sans)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(crt, key)
        self._ssl = ctx
        self.rotate_token()
        api = self

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            address_family = socket.AF_INET6 if ":" in api.host else socket.AF_INET

            def finish_request(self, request, client_address):
                try:
                    request = api._ssl.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    return  # the client refused our certificate, or went away
                super().finish_request(request, client_address)

            def handle_error(self, request, client_address):
                pass  # a client hanging up mid-watch is normal

        self._server = Server((self.host, self.port), _Handler)
        self._server.api = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="kube-api")
        self._thread.start()
        return self

    def stop(self):
        with self._cond:
            self._stopping = True
            for w in self._watches:
                w.dropped = True
            self._cond.notify_all()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def url(self):
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{h}:{self.port}"

    # -- objects --

    def _emit(self, resource, etype, obj):
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        self._events.append((self._rv, resource, etype, copy.deepcopy(obj)))
        self._cond.notify_all()

    def apply(self, kind, obj):
        """Create or replace an object; emits ADDED or MODIFIED. Returns the stored copy."""
        r = resource_of(kind)
        obj = copy.deepcopy(obj)
        _, k, api_version, namespaced = RESOURCES[r]
        obj["kind"], obj["apiVersion"] = k, api_version
        meta = obj.setdefault("metadata", {})
        meta.setdefault("uid", str(uuid.uuid4()))
        if namespaced:
            meta.setdefault("namespace", "default")
        key = (meta.get("namespace", ""), meta["name"])
        with self._cond:
            etype = "MODIFIED" if key in self._objects[r] else "ADDED"
            self._objects[r][key] = obj
            self._emit(r, etype, obj)
            return copy.deepcopy(obj)

    def delete(self, kind, ns, name):
        """Delete an object; emits DELETED (with the last state, as the API does)."""
        r = resource_of(kind)
        key = (ns or "", name) if RESOURCES[r][3] else ("", name)
        with self._cond:
            obj = self._objects[r].pop(key)
            self._emit(r, "DELETED", obj)

    def set_objects(self, kind, objs):
        """Make ``objs`` the complete set of ``kind``: deletes the others."""
        r = resource_of(kind)
        keep = set()
        for o in objs:
            s = self.apply(r, o)
            keep.add((s["metadata"].get("namespace", ""), s["metadata"]["name"]))
        with self._cond:
            gone = [k for k in self._objects[r] if k not in keep]
        for ns, name in gone:
            self.delete(r, ns, name)

    def objects(self, kind):
        with self._cond:
            return [copy.deepcopy(o) for o in self._objects[resource_of(kind)].values()]

    @property
    def resource_version(self):
        with self._cond:
            return self._rv

    # -- failure modes --

    def expire_resource_versions(self, how="event"):
        """Compact history: every resourceVersion handed out so far is too old.
        Open watches end with an ERROR event carrying a 410 Status (``how="event"``,
        what the API server does) or are cut (``how="drop"``); a new watch from an old
        version gets the same ERROR event, and paged lists' continue tokens get
        HTTP 410."""
        with self._cond:
            self._rv += 1
            self._compacted = self._rv
            self._events = []
            self._snapshots.clear()
            for w in self._watches:
                if how == "event":
                    w.expired = True
                else:
                    w.dropped = True
            self._cond.notify_all()

    def always_expire(self, kind, on=True):
        """Every watch of ``kind``, open or new, ends at once with an ERROR event
        carrying a 410 Status, even one from the resourceVersion a list just
        gave: an API server whose watch cache window is shorter than a list
        takes. Lists keep working. ``on=False`` ends it."""
        r = resource_of(kind)
        with self._cond:
            if not on:
                self._always_expired.discard(r)
                return
            self._always_expired.add(r)
            for w in self._watches:
                if w.resource == r:
                    w.expired = True
            self._cond.notify_all()

    def drop_watches(self):
        """Cut every open watch connection mid-stream (no final chunk)."""
        with self._cond:
            for w in self._watches:
                w.dropped = True
            self._cond.notify_all()

    def stall_watches(self):
        """Open watches stop sending anything (events, bookmarks, the end at
        timeoutSeconds) but stay connected; new watches are normal."""
        with self._cond:
            for w in self._watches:
                w.stalled = True
            self._cond.notify_all()

    def watch_count(self, resource=None):
        with self._cond:
            return sum(1 for w in self._watches
                       if not w.stalled and (resource is None or w.resource == resource))

    def rotate_token(self):
        """Write a new token to ``token_file`` (atomically); only it is accepted now."""
        tok = secrets.token_hex(24)
        tmp = self.token_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(tok + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.token_file)
        with self._cond:
            self._tokens = {tok}
        return tok

    def send_raw(self, where, kind, text, count=1):
        """Malformed input, as a broken or hostile API server would send it.
        ``where="watch"``: ``text`` goes as one line (one chunk) to every open
        watch of ``kind``, as if it were an event. ``where="list"``: the next
        ``count`` lists of ``kind`` answer 200 with ``text`` as the body.
        The objects the API holds do not change. Returns how many watches got
        it (watch) or ``count`` (list)."""
        r = resource_of(kind)
        with self._cond:
            if where == "list":
                self._raw_lists.setdefault(r, []).extend([text] * count)
                return count
            if where != "watch":
                raise ValueError(f"where={where!r}: watch or list")
            ws = [w for w in self._watches if w.resource == r and not w.stalled]
            for w in ws:
                w.raw.append(text)
            self._cond.notify_all()
            return len(ws)

    def _raw_list(self, resource):
        with self._cond:
            pending = self._raw_lists.get(resource)
            return pending.pop(0) if pending else None

    def forbid(self, kind, forbidden=True):
        """Answer 403 Forbidden for ``kind``, as RBAC without that grant does."""
        with self._cond:
            (self._forbidden.add if forbidden else self._forbidden.discard)(resource_of(kind))

    def request_times(self, status=None, resource=None, watch=None):
        """When the server got each matching request (``time.monotonic()`` of this
        process), in order."""
        with self._cond:
            reqs = list(self.requests)
        times = []
        for _m, path, q, st, t in reqs:
            if status is not None and st != status:
                continue
            if resource is not None and PATH_TO_RESOURCE.get(path) != resource:
                continue
            if watch is not None and (q.get("watch") in ("1", "true")) != watch:
                continue
            times.append(t)
        return times

    def count_requests(self, status=None, resource=None, watch=None):
        return len(self.request_times(status, resource, watch))

    # -- request handling (called from handler threads) --

    def _log(self, path, query, code):
        with self._cond:
            self.requests.append(("GET", path, query, code, time.monotonic()))

    def _authorized(self, header):
        if not header or not header.startswith("Bearer "):
            return False
        with self._cond:
            return header[len("Bearer "):].strip() in self._tokens

    def _list(self, resource, query):
        """(code, body) of a list request, paged with limit/continue. A list
        always answers from the current state: resourceVersion=0 ("any") and ""
        (most recent) are the same here; continue with resourceVersion is a 400,
        as on the API server."""
        node = _node_selector(query)
        limit = int(query.get("limit", "0") or 0)
        cont = query.get("continue")
        _, kind, api_version, _ = RESOURCES[resource]
        if cont and query.get("resourceVersion"):
            return 400, status(400, "BadRequest", "specifying resource version is not "
                               "allowed when using continue")
        with self._cond:
            if cont:
                snap = self._snapshots.pop(cont, None)
                if snap is None:
                    return 410, status(410, "Expired",
                                       "The provided continue parameter is too old to display "
                                       "a consistent list result. You can start a new list "
                                       "without the continue parameter.")
                rv, items = snap
            else:
                rv = self._rv
                items = []
                for key in sorted(self._objects[resource]):
                    o = self._objects[resource][key]
                    if not _selected(o, node):
                        continue
                    o = copy.deepcopy(o)
                    o.pop("kind", None)  # list items carry no TypeMeta
                    o.pop("apiVersion", None)
                    items.append(o)
            meta = {"resourceVersion": str(rv)}
            if limit and len(items) > limit:
                token = base64.urlsafe_b64encode(secrets.token_bytes(12)).decode()
                self._snapshots[token] = (rv, items[limit:])
                items = items[:limit]
                meta["continue"] = token
        return 200, {"kind": kind + "List", "apiVersion": api_version, "metadata": meta,
                     "items": items}

    def _watch_start(self, resource, query):
        """(watch, events to replay, stale?) for a new watch."""
        rv = query.get("resourceVersion", "")
        with self._cond:
            w = _Watch(resource, None)
            self._watches.add(w)
            if resource in self._always_expired:
                return w, [], self._rv, True
            if rv in ("", "0"):
                replay = [(self._rv, "ADDED", copy.deepcopy(o))
                          for o in self._objects[resource].values()]
                return w, replay, self._rv, False
            try:
                since = int(rv)
            except ValueError:
                since = -1
            if since < self._compacted:
                return w, [], since, True
            return w, [], since, False

    def _watch_next(self, w, since, node, wait_s):
        """(raw lines, events of ``w``'s resource after ``since``, last version);
        waits up to ``wait_s``."""
        with self._cond:
            def ready():
                return (self._stopping or w.dropped or w.expired or w.raw or
                        (not w.stalled and any(rv > since and r == w.resource
                                               for rv, r, _t, _o in self._events)))
            self._cond.wait_for(ready, timeout=wait_s)
            raw, w.raw = w.raw, []
            if w.stalled:
                return raw, [], since
            evs = [(rv, t, copy.deepcopy(o)) for rv, r, t, o in self._events
                   if rv > since and r == w.resource]
            last = max([since] + [rv for rv, _t, _o in evs])
            if node:
                evs = [e for e in evs if _selected(e[2], node)]
            return raw, evs, last

    def _watch_end(self, w):
        with self._cond:
            self._watches.discard(w)


def _node_selector(query):
    """(field, value) of fieldSelector=spec.nodeName=NODE or metadata.name=NAME, or
    None; other selectors are refused (the fixture implements just these)."""
    fs = query.get("fieldSelector")
    if not fs:
        return None
    for field in ("spec.nodeName", "metadata.name"):
        if fs.startswith(field + "="):
            return field, fs[len(field) + 1:]
    raise ValueError(f"fieldSelector {fs!r} not supported by the fixture")


def _selected(obj, sel):
    """Whether ``obj`` passes the field selector ``sel`` (see _node_selector)."""
    if not sel:
        return True
    field, value = sel
    top, key = field.split(".")
    return obj.get(top, {}).get(key) == value


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def _send_json(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def _chunk(self, obj):
        data = json.dumps(obj).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def do_GET(self):
        api = self.server.api
        u = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(u.query).items()}
        resource = PATH_TO_RESOURCE.get(u.path)
        if not api._authorized(self.headers.get("Authorization")):
            api._log(u.path, query, 401)
            return self._send_json(401, status(401, "Unauthorized", "Unauthorized"))
        if resource is None:
            api._log(u.path, query, 404)
            return self._send_json(404, status(404, "NotFound",
                                               "the server could not find the requested "
                                               "resource"))
        with api._cond:
            forbidden = resource in api._forbidden
        if forbidden:
            api._log(u.path, query, 403)
            return self._send_json(403, status(
                403, "Forbidden", f'{resource} is forbidden: User "system:serviceaccount:'
                f'h2split-system:h2split" cannot list resource "{resource}" at the cluster '
                f'scope'))
        try:
            _node_selector(query)
        except ValueError as e:
            api._log(u.path, query, 400)
            return self._send_json(400, status(400, "BadRequest", str(e)))
        if query.get("watch") in ("1", "true"):
            api._log(u.path, query, 200)
            return self._watch(api, resource, query)
        raw = None if query.get("continue") else api._raw_list(resource)
        if raw is not None:
            api._log(u.path, query, 200)
            return self._send_raw(raw)
        code, body = api._list(resource, query)
        api._log(u.path, query, code)
        self._send_json(code, body)

    def _send_raw(self, text):
        data = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def _watch(self, api, resource, query):
        node = _node_selector(query)
        timeout = float(query.get("timeoutSeconds", "1800"))
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        w, replay, since, stale = api._watch_start(resource, query)
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if stale:
                self._chunk({"type": "ERROR", "object": status(
                    410, "Expired", f"too old resource version: {since} ({api._compacted})")})
                self.wfile.write(b"0\r\n\r\n")
                return
            for _rv, t, o in replay:
                if _selected(o, node):
                    self._chunk({"type": t, "object": o})
            self._stream(api, w, since, node, time.monotonic() + timeout, bookmarks)
        except (OSError, ssl.SSLError):
            pass
        finally:
            api._watch_end(w)
            self.close_connection = True

    def _stream(self, api, w, since, node, deadline, bookmarks):
        kind, api_version = RESOURCES[w.resource][1], RESOURCES[w.resource][2]
        next_bookmark = time.monotonic() + api.bookmark_interval
        while True:
            now = time.monotonic()
            if w.stalled:
                deadline = float("inf")  # silent: not even the end at timeoutSeconds
            if now >= deadline:
                self.wfile.write(b"0\r\n\r\n")
                return
            if w.stalled:
                wait = 1.0
            else:
                wait = min(deadline, next_bookmark if bookmarks else deadline) - now
            raw, evs, since = api._watch_next(w, since, node, max(0.0, wait))
            if api._stopping or w.dropped:
                # Cut the TCP connection under TLS: no close_notify, no last chunk.
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if w.expired:
                self._chunk({"type": "ERROR", "object": status(
                    410, "Expired", f"too old resource version: {since} ({api._compacted})")})
                self.wfile.write(b"0\r\n\r\n")
                return
            for line in raw:
                data = line.encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            for _rv, t, o in evs:
                self._chunk({"type": t, "object": o})
            if bookmarks and not w.stalled and time.monotonic() >= next_bookmark:
                self._chunk({"type": "BOOKMARK", "object": {
                    "kind": kind, "apiVersion": api_version,
                    "metadata": {"resourceVersion": str(since)}}})
                next_bookmark = time.monotonic() + api.bookmark_interval


# ---- driving a fixture in another process (e.g. in a test bed netns) ----

class KubeAPIProcess:
    """The same API as ``KubeAPI``, for a fixture started with ``popen`` (e.g. a
    test bed place's ``node.popen``): ``KubeAPIProcess(node.popen)``."""

    def __init__(self, popen, host="127.0.0.1", workdir=None, bookmark_interval=1.0,
                 python="/usr/bin/python3", timeout=30):
        argv = [python, os.path.abspath(__file__), "--host", host,
                "--bookmark-interval", str(bookmark_interval)]
        if workdir:
            argv += ["--dir", workdir]
        self.proc = popen(argv, name="kube-api", watch=True, stdin=subprocess.PIPE)
        self._lock = threading.Lock()
        ready = json.loads(self.proc.wait_line(r'^\{"ready"', timeout))
        self.url = ready["url"]
        self.ca_file = ready["ca_file"]
        self.other_ca_file = ready["other_ca_file"]
        self.token_file = ready["token_file"]
        self.port = ready["port"]

    def _call(self, op, **args):
        with self._lock:
            self.proc.stdin.write(json.dumps({"op": op, "args": args}) + "\n")
            self.proc.stdin.flush()
            reply = json.loads(self.proc.wait_line(r'^\{"ok"', 30))
        if not reply["ok"]:
            raise RuntimeError(f"kube_api {op}: {reply['error']}")
        return reply.get("result")

    def apply(self, kind, obj):
        return self._call("apply", kind=kind, obj=obj)

    def delete(self, kind, ns, name):
        return self._call("delete", kind=kind, ns=ns, name=name)

    def set_objects(self, kind, objs):
        return self._call("set_objects", kind=kind, objs=objs)

    def objects(self, kind):
        return self._call("objects", kind=kind)

    def expire_resource_versions(self, how="event"):
        return self._call("expire_resource_versions", how=how)

    def drop_watches(self):
        return self._call("drop_watches")

    def stall_watches(self):
        return self._call("stall_watches")

    def rotate_token(self):
        return self._call("rotate_token")

    def watch_count(self, resource=None):
        return self._call("watch_count", resource=resource)

    def forbid(self, kind, forbidden=True):
        return self._call("forbid", kind=kind, forbidden=forbidden)

    def send_raw(self, where, kind, text, count=1):
        return self._call("send_raw", where=where, kind=kind, text=text, count=count)

    def count_requests(self, status=None, resource=None, watch=None):
        return self._call("count_requests", status=status, resource=resource, watch=watch)

    def request_times(self, status=None, resource=None, watch=None):
        return self._call("request_times", status=status, resource=resource, watch=watch)

    def always_expire(self, kind, on=True):
        return self._call("always_expire", kind=kind, on=on)

    def stop(self):
        self.proc.stop()


_COMMANDS = {"apply", "delete", "set_objects", "objects", "expire_resource_versions",
             "always_expire", "drop_watches", "stall_watches", "rotate_token", "watch_count",
             "forbid", "count_requests", "request_times", "send_raw"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--dir", default=None, help="where the CA, certificate and token go")
    ap.add_argument("--bookmark-interval", type=float, default=1.0)
    ap.add_argument("--cert-ip", action="append",
                    help="IP the server certificate names (default: --host); another "
                         "address makes clients' host verification fail")
    a = ap.parse_args(argv)
    api = KubeAPI(a.host, a.port, a.dir, a.bookmark_interval, a.cert_ip).start()
    print(json.dumps({"ready": True, "url": api.url, "port": api.port, "ca_file": api.ca_file,
                      "other_ca_file": api.other_ca_file, "token_file": api.token_file}),
          flush=True)
    try:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                cmd = json.loads(line)
                if cmd["op"] not in _COMMANDS:
                    raise ValueError(f"unknown op {cmd['op']!r}")
                result = getattr(api, cmd["op"])(**cmd.get("args", {}))
                reply = {"ok": True, "result": result if result is None or
                         isinstance(result, (int, str, list, dict)) else None}
            except Exception as e:  # reported to the driver, which raises it
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            print(json.dumps(reply), flush=True)
    finally:
        api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
