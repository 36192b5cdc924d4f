# SPDX-License-Identifier: Apache-2.0
"""Run a rendered DaemonSet's pod template in podman, as a kubelet would, on
the simulated node: every container of the pod template becomes one
`podman run` whose options come from the YAML alone (privileged, the host
namespaces, hostPath mounts with their propagation, env and envFrom, command
and args, the memory limit), and stopping runs the preStop hook and then
SIGTERM within the pod's grace period. A field this module does not know
fails loudly, so a new field in deploy/ cannot be dropped silently.

The node of the test bed is a network namespace, so hostNetwork means that
namespace (`--network ns:/run/netns/<bed>-node`); hostPID is the machine's
PID namespace (the bed's pods live there). What a kubelet adds on its own
(the service account token volume, KUBERNETES_SERVICE_HOST/PORT, the value
of fieldRef spec.nodeName) comes from the caller's ``Kubelet``.
"""

import json
import os
import subprocess
import time

import yaml

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Fields with no effect on a single node's container (scheduling, RBAC, DNS
# for a process that resolves nothing: the daemon reaches the API server at
# KUBERNETES_SERVICE_HOST, an address); each is named so none is missed.
IGNORED_POD_FIELDS = {"priorityClassName", "tolerations", "dnsPolicy", "serviceAccountName"}
POD_FIELDS = {"hostNetwork", "hostPID", "containers", "initContainers", "volumes",
              "terminationGracePeriodSeconds", "automountServiceAccountToken"}
CONTAINER_FIELDS = {"name", "image", "command", "args", "env", "envFrom", "securityContext",
                    "volumeMounts", "lifecycle", "livenessProbe", "readinessProbe",
                    "resources"}
PROPAGATION = {None: "rprivate", "None": "rprivate", "HostToContainer": "rslave",
               "Bidirectional": "rshared"}
MEMORY_UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


class PodSpecError(ValueError):
    """The pod template has a field this runner cannot express."""


def render(kubectl, path):
    """``kubectl kustomize path`` as a list of objects (kubectl 1.20 and later)."""
    p = subprocess.run([kubectl, "kustomize", path], capture_output=True, text=True,
                       timeout=60)
    if p.returncode != 0:
        raise RuntimeError(f"{kubectl} kustomize {path}: {p.stderr}")
    return [o for o in yaml.safe_load_all(p.stdout) if o]


def find(objs, kind, name):
    for o in objs:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    raise KeyError(f"no {kind} {name} in the rendered objects")


class Kubelet:
    """What the kubelet adds to a pod: ``node_name`` (spec.nodeName), ``netns``
    (the node's network namespace path, for hostNetwork), ``api`` (host, port)
    of the API server and ``sa_dir`` (token, ca.crt, namespace) for the service
    account volume; ``label`` marks every container (cleanup); ``env`` holds
    podman's own environment (CONTAINERS_CONF)."""

    def __init__(self, node_name, netns, api, sa_dir, label, env):
        self.node_name, self.netns, self.api, self.sa_dir = node_name, netns, api, sa_dir
        self.label, self.env = label, env

    def podman(self, *args, timeout=120, check=True):
        p = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout,
                           env=self.env)
        if check and p.returncode != 0:
            raise RuntimeError(f"podman {' '.join(args)}: exit {p.returncode}: {p.stderr}")
        return p

    def remove_all(self):
        """Remove every container this kubelet's label marks (also a crashed run's)."""
        ids = self.podman("ps", "-aq", "--filter", f"label={self.label}").stdout.split()
        if ids:
            self.podman("rm", "-f", "-t", "0", *ids, timeout=180)


class Pod:
    """A DaemonSet's pod template, with the ConfigMaps of the same rendering."""

    def __init__(self, objs, daemonset, kubelet, configmap_overrides=None):
        ds = find(objs, "DaemonSet", daemonset)
        self.spec = ds["spec"]["template"]["spec"]
        self.namespace = ds["metadata"].get("namespace", "default")
        self.kubelet = kubelet
        self.overrides = dict(configmap_overrides or {})
        self.configmaps = {o["metadata"]["name"]: dict(o.get("data") or {})
                           for o in objs if o["kind"] == "ConfigMap"}
        unknown = set(self.spec) - POD_FIELDS - IGNORED_POD_FIELDS
        if unknown:
            raise PodSpecError(f"pod template of {daemonset}: fields {sorted(unknown)} "
                               "not known to podrun.py")
        self.grace = int(self.spec.get("terminationGracePeriodSeconds", 30))
        self._n = 0

    def container(self, name, init=False):
        cs = self.spec.get("initContainers" if init else "containers") or []
        for c in cs:
            if c["name"] == name:
                return c
        raise KeyError(f"no {'init ' if init else ''}container {name}")

    def configmap(self, name):
        """A ConfigMap's data as the test runs it: the rendered data with the
        test's overrides on top (the keys the docstring of the test names)."""
        data = dict(self.configmaps[name])
        data.update(self.overrides)
        return data

    def env(self, c):
        """The container's environment as Kubernetes builds it: envFrom in
        order, then env (which wins), then the API server variables."""
        env = {}
        for src in c.get("envFrom", []):
            ref = src.get("configMapRef")
            if not ref or set(src) != {"configMapRef"}:
                raise PodSpecError(f"envFrom {src}: only configMapRef is known")
            env.update(self.configmap(ref["name"]))
        for e in c.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
            elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
                env[e["name"]] = self.kubelet.node_name
            else:
                raise PodSpecError(f"env {e}: only value and fieldRef spec.nodeName are known")
        if self.kubelet.api:
            env["KUBERNETES_SERVICE_HOST"], env["KUBERNETES_SERVICE_PORT"] = \
                self.kubelet.api[0], str(self.kubelet.api[1])
        return env

    def mounts(self, c):
        vols = {v["name"]: v for v in self.spec.get("volumes", [])}
        out = []
        for m in c.get("volumeMounts", []):
            v = vols[m["name"]]
            if set(v) != {"name", "hostPath"}:
                raise PodSpecError(f"volume {v}: only hostPath is known")
            hp = v["hostPath"]
            if hp.get("type") == "DirectoryOrCreate":
                os.makedirs(hp["path"], exist_ok=True)
            elif hp.get("type") == "Directory" and not os.path.isdir(hp["path"]):
                raise RuntimeError(f"hostPath {hp['path']} (type Directory) is missing")
            prop = PROPAGATION[m.get("mountPropagation")]
            ro = ",ro" if m.get("readOnly") else ""
            out.append(f"type=bind,src={hp['path']},dst={m['mountPath']},"
                       f"bind-propagation={prop}{ro}")
        if self.spec.get("automountServiceAccountToken", True) and self.kubelet.sa_dir:
            out.append(f"type=bind,src={self.kubelet.sa_dir},dst={SA_DIR},ro")
        return out

    def run_argv(self, c, name, detach=True):
        """The `podman run` argv for container spec ``c``, from the YAML only."""
        unknown = set(c) - CONTAINER_FIELDS
        if unknown:
            raise PodSpecError(f"container {c['name']}: fields {sorted(unknown)} "
                               "not known to podrun.py")
        argv = ["run", "--name", name, "--label", self.kubelet.label, "--pull=never",
                "--stop-timeout", str(self.grace)]
        if detach:
            argv.append("-d")
        if self.spec.get("hostNetwork"):
            argv.append(f"--network=ns:{self.kubelet.netns}")
        if self.spec.get("hostPID"):
            argv.append("--pid=host")
        # The cgroup namespace is the runtime's choice, not the pod's; the
        # daemon reads the host's hierarchy through its hostPath mount anyway.
        argv.append("--cgroupns=host")
        sc = c.get("securityContext", {})
        if set(sc) - {"privileged"}:
            raise PodSpecError(f"securityContext {sc}: only privileged is known")
        if sc.get("privileged"):
            argv.append("--privileged")
        limit = c.get("resources", {}).get("limits", {}).get("memory")
        if limit:
            argv.append(f"--memory={memory_bytes(limit)}")
        for k, v in sorted(self.env(c).items()):
            argv += ["--env", f"{k}={v}"]
        for m in self.mounts(c):
            argv += ["--mount", m]
        if "command" in c:
            argv += ["--entrypoint", json.dumps(c["command"])]
        argv.append(c["image"])
        argv += [str(a) for a in c.get("args", [])]
        return argv

    def _name(self, c):
        self._n += 1
        return f"{self.kubelet.label.split('=')[-1]}-{c['name']}-{self._n}"

    def run_init(self, name, timeout=120):
        """Run init container ``name`` to completion; returns (exit code, output)."""
        c = self.container(name, init=True)
        cname = self._name(c)
        p = self.kubelet.podman(*self.run_argv(c, cname, detach=False), timeout=timeout,
                                check=False)
        self.kubelet.podman("rm", "-f", cname, check=False)
        return p.returncode, p.stdout + p.stderr

    def start(self, name):
        """Start container ``name`` detached; returns its podman name."""
        c = self.container(name)
        cname = self._name(c)
        self.kubelet.podman(*self.run_argv(c, cname))
        return cname

    def stop(self, name, cname):
        """Stop as the kubelet does: the preStop exec hook, then SIGTERM, and
        SIGKILL once the grace period (counted from the hook's start) is over.
        Returns (seconds taken, exit code)."""
        c = self.container(name)
        t0 = time.monotonic()
        hook = c.get("lifecycle", {}).get("preStop")
        if hook:
            if set(hook) != {"exec"}:
                raise PodSpecError(f"preStop {hook}: only exec is known")
            self.kubelet.podman("exec", cname, *hook["exec"]["command"], timeout=self.grace,
                                check=False)
        left = max(0, int(self.grace - (time.monotonic() - t0)))
        self.kubelet.podman("stop", "-t", str(left), cname, timeout=left + 60)
        took = time.monotonic() - t0
        return took, self.exit_code(cname)

    def kill(self, cname):
        self.kubelet.podman("kill", "-s", "KILL", cname)
        self.kubelet.podman("wait", cname, timeout=60, check=False)
        return self.exit_code(cname)

    def exit_code(self, cname):
        return int(self.kubelet.podman("inspect", "-f", "{{.State.ExitCode}}", cname)
                   .stdout.strip())

    def running(self, cname):
        p = self.kubelet.podman("inspect", "-f", "{{.State.Running}}", cname, check=False)
        return p.stdout.strip() == "true"

    def logs(self, cname):
        p = self.kubelet.podman("logs", cname, check=False)
        return p.stdout + p.stderr


def memory_bytes(q):
    for unit, mult in MEMORY_UNITS.items():
        if q.endswith(unit):
            return int(q[:-len(unit)]) * mult
    return int(q)


def probe_url(probe):
    """The URL an httpGet probe asks for."""
    if "httpGet" not in probe or set(probe) - {
            "httpGet", "periodSeconds", "timeoutSeconds", "failureThreshold",
            "initialDelaySeconds", "successThreshold"}:
        raise PodSpecError(f"probe {probe}: only httpGet is known")
    g = probe["httpGet"]
    if "host" not in g:
        # The kubelet would ask the pod IP (for hostNetwork: the node's), which
        # the bed's node does not have.
        raise PodSpecError(f"probe {probe}: no host; the bed probes a named host only")
    scheme = g.get("scheme", "HTTP").lower()
    return f"{scheme}://{g['host']}:{g['port']}{g.get('path', '/')}"
