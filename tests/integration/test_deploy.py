# SPDX-License-Identifier: Apache-2.0
"""deploy/ renders to what a cluster needs: the kustomizations are rendered with
`kubectl kustomize` (offline) and the objects checked field by field, and every
ConfigMap key must be an environment variable h2splitd really reads (the flag
table in userspace/base/config.c, cross-checked against `h2splitd --help`); the
balancing knobs ship at the defaults README.md's flag table documents.

Users run Debian 12's kubectl 1.20 (kustomize v2) as well as current ones
(kustomize v5), so deploy/ keeps to what both load and every check runs with
each kubectl given: the one on PATH, plus those in $H2SPLIT_KUBECTL (paths,
separated by ':'), e.g. Debian's unpacked beside a newer one:
  apt-get download kubernetes-client && dpkg -x kubernetes-client_*.deb k120
  H2SPLIT_KUBECTL=$PWD/k120/usr/bin/kubectl make integration PYTEST_ARGS=test_deploy.py
"""

import os
import re
import shutil
import subprocess

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
NAMESPACE = "h2split-system"
ADMIN_PORT = 9901


def kubectls():
    """Every kubectl to render with; "kubectl" alone when there is none, so
    that CI fails on it (below) rather than skipping."""
    found = {}
    for k in [shutil.which("kubectl")] + os.environ.get("H2SPLIT_KUBECTL", "").split(":"):
        if k:
            found.setdefault(os.path.realpath(k), k)
    return list(found.values()) or ["kubectl"]


def kubectl_version(kubectl):
    """Its client version, e.g. v1.20.2 (1.20 prints a Go struct, current ones
    "Client Version: v1.32.4"); names the test ids."""
    try:
        out = subprocess.run([kubectl, "version", "--client"], capture_output=True,
                             text=True, timeout=30).stdout
    except OSError:
        return "missing"
    m = re.search(r'GitVersion:"(v[^"]+)"|Client Version: (v\d\S*)', out)
    return (m.group(1) or m.group(2)) if m else "unknown"


KUBECTLS = kubectls()

pytestmark = pytest.mark.skipif(
    not shutil.which("kubectl") and os.environ.get("CI") != "true",
    reason="kubectl not installed: run 'make deps' (kustomize comes with kubectl)")


def render(kubectl, path):
    try:
        p = subprocess.run([kubectl, "kustomize", path], capture_output=True, text=True,
                           timeout=60)
    except FileNotFoundError:
        pytest.fail(f"{kubectl} not found: run 'make deps' (kustomize comes with kubectl)")
    assert p.returncode == 0, f"{kubectl} kustomize {path}: {p.stderr}"
    # A deprecation warning today is a failure with the next kustomize.
    assert not p.stderr.strip(), f"{kubectl} kustomize {path} warns: {p.stderr}"
    return [o for o in yaml.safe_load_all(p.stdout) if o]


def by_kind(objs, kind, name=None):
    found = [o for o in objs if o["kind"] == kind and
             (name is None or o["metadata"]["name"] == name)]
    assert found, f"no {kind} {name or ''} in the rendered objects"
    return found[0]


def daemon_env_names():
    """H2SPLIT_* names from the option table in userspace/base/config.c."""
    with open(os.path.join(ROOT, "userspace", "base", "config.c")) as f:
        src = f.read()
    table = re.search(r"static const struct opt opts\[\] = \{(.*?)\n\};", src, re.S)
    assert table, "option table not found in userspace/base/config.c"
    flags = re.findall(r'\{"([a-z0-9-]+)",', table.group(1))
    assert "discovery" in flags and "node-name" in flags
    return {"H2SPLIT_" + f.upper().replace("-", "_") for f in flags}


@pytest.fixture(scope="module", params=KUBECTLS,
                ids=[f"kubectl-{kubectl_version(k)}" for k in KUBECTLS])
def kubectl(request):
    return request.param


@pytest.fixture(scope="module")
def install(kubectl):
    return render(kubectl, DEPLOY)


@pytest.fixture(scope="module")
def uninstall(kubectl):
    return render(kubectl, os.path.join(DEPLOY, "uninstall"))


def kustomizations():
    return sorted(d for d, _, files in os.walk(DEPLOY) if "kustomization.yaml" in files)


def test_kustomizations_load_in_every_kustomize():
    """kustomize v2 (kubectl 1.20) loads only files as resources, v5 warns on
    `bases:`, and both refuse paths above the kustomization's own directory:
    what is left for both is a file at or below it."""
    dirs = kustomizations()
    assert os.path.join(DEPLOY, "uninstall") in dirs and DEPLOY in dirs
    for d in dirs:
        with open(os.path.join(d, "kustomization.yaml")) as f:
            k = yaml.safe_load(f)
        rel = os.path.relpath(d, ROOT)
        for key in ("bases", "components"):
            assert key not in k, f"{rel}: '{key}:' does not load in every kustomize"
        for r in k["resources"]:
            path = os.path.realpath(os.path.join(d, r))
            assert path.startswith(os.path.realpath(d) + os.sep), \
                f"{rel}: resource {r} is not at or below {rel}/"
            assert os.path.isfile(path), \
                f"{rel}: resource {r} is not a file (kubectl 1.20 loads files only)"


def test_every_kubectl_renders_the_same():
    """Users apply deploy/ with old and new kubectl alike: the same objects."""
    if len(KUBECTLS) < 2:
        pytest.skip("one kubectl here; H2SPLIT_KUBECTL names more to compare")
    for d in kustomizations():
        ref = render(KUBECTLS[0], d)
        for k in KUBECTLS[1:]:
            assert render(k, d) == ref, f"{k} renders {d} unlike {KUBECTLS[0]}"


def pod_spec(objs, name):
    return by_kind(objs, "DaemonSet", name)["spec"]["template"]["spec"]


def container(spec, name, init=False):
    cs = spec["initContainers" if init else "containers"]
    found = [c for c in cs if c["name"] == name]
    assert found, f"no {'init ' if init else ''}container {name}"
    return found[0]


def test_install_has_every_kind(install):
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in install)
    assert kinds == sorted([
        ("Namespace", NAMESPACE), ("ServiceAccount", "h2split"), ("ClusterRole", "h2split"),
        ("ClusterRoleBinding", "h2split"), ("ConfigMap", "h2split-config"),
        ("DaemonSet", "h2split")])


def test_namespaced_objects_are_in_one_namespace(install, uninstall):
    for o in install + uninstall:
        if o["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert "namespace" not in o["metadata"], o["kind"]
        else:
            assert o["metadata"].get("namespace") == NAMESPACE, (o["kind"],
                                                                  o["metadata"]["name"])
    binding = by_kind(install, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "h2split",
                                    "namespace": NAMESPACE}]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": "h2split"}
    assert pod_spec(install, "h2split")["serviceAccountName"] == "h2split"


def test_rbac_is_read_only_on_exactly_what_discovery_reads(install):
    granted = set()
    for rule in by_kind(install, "ClusterRole")["rules"]:
        assert sorted(rule["verbs"]) == ["get", "list", "watch"], rule
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                granted.add((g, r))
    # nodes: the daemon's own Node, for its zone label (locality).
    assert granted == {("", "services"), ("", "namespaces"), ("", "pods"), ("", "nodes"),
                       ("discovery.k8s.io", "endpointslices")}


def test_daemonset_host_access_and_privileges(install):
    spec = pod_spec(install, "h2split")
    assert spec["hostNetwork"] is True
    assert spec["hostPID"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"]
    main = container(spec, "h2splitd")
    assert main["securityContext"].get("privileged") is True
    # A declared port is a hostPort under hostNetwork and would block maxSurge.
    assert "ports" not in main


def test_daemonset_mounts_bpffs_and_host_cgroup(install):
    spec = pod_spec(install, "h2split")
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["bpffs"]["hostPath"]["path"] == "/sys/fs/bpf"
    assert vols["cgroup"]["hostPath"]["path"] == "/sys/fs/cgroup"
    init = container(spec, "mount-bpffs", init=True)
    assert init["securityContext"]["privileged"] is True  # Bidirectional requires it
    assert {"name": "bpffs", "mountPath": "/sys/fs/bpf",
            "mountPropagation": "Bidirectional"} in init["volumeMounts"]
    assert "mount -t bpf bpf /sys/fs/bpf" in " ".join(init["command"])
    mounts = {m["name"]: m for m in container(spec, "h2splitd")["volumeMounts"]}
    assert mounts["bpffs"]["mountPath"] == "/sys/fs/bpf"
    assert mounts["bpffs"]["mountPropagation"] in ("HostToContainer", "Bidirectional")
    assert mounts["cgroup"]["mountPath"] == "/sys/fs/cgroup"


def test_daemonset_probes_reach_the_admin_port(install):
    main = container(pod_spec(install, "h2split"), "h2splitd")
    cm = by_kind(install, "ConfigMap", "h2split-config")["data"]
    admin_host, admin_port = cm["H2SPLIT_ADMIN"].rsplit(":", 1)
    assert int(admin_port) == ADMIN_PORT
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = main[probe]["httpGet"]
        assert get["path"] == path
        assert get["port"] == ADMIN_PORT
        # The kubelet probes the pod IP (the node IP) unless host is set: it must
        # be an address the admin endpoint listens on.
        assert get.get("host") == admin_host or admin_host in ("0.0.0.0", "::")


def test_daemonset_update_and_shutdown(install):
    ds = by_kind(install, "DaemonSet", "h2split")
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    spec = ds["spec"]["template"]["spec"]
    main = container(spec, "h2splitd")
    pre = main["lifecycle"]["preStop"]
    assert "exec" in pre or "sleep" in pre or "httpGet" in pre
    cm = by_kind(install, "ConfigMap", "h2split-config")["data"]
    pre_s = int(pre["exec"]["command"][1]) if pre.get("exec", {}).get("command", [""])[0] == \
        "sleep" else 0
    assert spec["terminationGracePeriodSeconds"] > int(cm["H2SPLIT_DRAIN_TIMEOUT"]) + pre_s
    res = main["resources"]
    assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"]


def test_daemonset_env_comes_from_the_configmap(install):
    main = container(pod_spec(install, "h2split"), "h2splitd")
    assert main["envFrom"] == [{"configMapRef": {"name": "h2split-config"}}]
    env = {e["name"]: e for e in main["env"]}
    assert env["H2SPLIT_NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    cm = by_kind(install, "ConfigMap", "h2split-config")["data"]
    assert cm["H2SPLIT_DISCOVERY"] == "kubernetes"
    for k in ("H2SPLIT_LISTEN", "H2SPLIT_ADMIN", "H2SPLIT_LOG_LEVEL", "H2SPLIT_DRAIN_TIMEOUT"):
        assert k in cm


def test_configmap_keys_are_real_daemon_variables(install):
    known = daemon_env_names()
    cm = by_kind(install, "ConfigMap", "h2split-config")["data"]
    env = container(pod_spec(install, "h2split"), "h2splitd")["env"]
    unknown = (set(cm) | {e["name"] for e in env}) - known
    assert not unknown, f"h2splitd reads no such variables: {sorted(unknown)}"
    assert all(isinstance(v, str) for v in cm.values())


BALANCING = ("H2SPLIT_LB_POLICY", "H2SPLIT_LB_EWMA_DECAY", "H2SPLIT_OUTLIER_FAILURES",
             "H2SPLIT_OUTLIER_FAILURE_PERCENT", "H2SPLIT_OUTLIER_EJECTION", "H2SPLIT_SLOW_START",
             "H2SPLIT_MAX_INFLIGHT_PER_ENDPOINT", "H2SPLIT_MAX_INFLIGHT_PER_SERVICE",
             "H2SPLIT_MAX_PENDING", "H2SPLIT_PENDING_TIMEOUT")


def readme_flag_defaults():
    """{H2SPLIT_NAME: default} from README.md's flag table (first word of the
    default column: "0 (off)" is "0")."""
    with open(os.path.join(ROOT, "README.md")) as f:
        rows = re.findall(r"^\| `--([a-z0-9-]+)[^`]*` \| ([^|]*)\|", f.read(), re.M)
    return {"H2SPLIT_" + f.upper().replace("-", "_"): (d.split() or [""])[0]
            for f, d in rows}


def test_configmap_ships_the_balancing_knobs_at_their_defaults(install):
    """An operator tunes balancing in the ConfigMap: every knob is there, at
    the default the README documents (so installing changes nothing)."""
    cm = by_kind(install, "ConfigMap", "h2split-config")["data"]
    defaults = readme_flag_defaults()
    assert set(BALANCING) <= set(defaults), sorted(set(BALANCING) - set(defaults))
    wrong = {k: (cm.get(k), defaults[k]) for k in BALANCING if cm.get(k) != defaults[k]}
    assert not wrong, f"ConfigMap value vs README default: {wrong}"


def test_flag_table_matches_help_output():
    binary = os.path.join(os.environ.get("H2SPLIT_BUILD", os.path.join(ROOT, "build")),
                          "h2splitd")
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{binary} not built: run make")
    out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10).stdout
    helped = {"H2SPLIT_" + f.upper().replace("-", "_")
              for f in re.findall(r"--([a-z][a-z0-9-]+)", out)}
    assert helped == daemon_env_names()


def test_one_image_everywhere(install, uninstall):
    images = set()
    for objs in (install, uninstall):
        for o in objs:
            if o["kind"] != "DaemonSet":
                continue
            spec = o["spec"]["template"]["spec"]
            for c in spec.get("initContainers", []) + spec["containers"]:
                images.add(c["image"])
    assert len(images) == 1, images
    assert images.pop().startswith("h2split/h2split:")


def test_uninstall_runs_h2splitd_uninstall_on_every_node(uninstall, install):
    kinds = sorted(o["kind"] for o in uninstall)
    assert kinds == ["ConfigMap", "DaemonSet", "Namespace"]
    # The same settings as the install: the same pin root and listen address.
    assert by_kind(uninstall, "ConfigMap")["data"] == by_kind(install, "ConfigMap")["data"]
    spec = pod_spec(uninstall, "h2split-uninstall")
    assert spec["hostNetwork"] is True
    assert spec["automountServiceAccountToken"] is False
    assert {"operator": "Exists"} in spec["tolerations"]
    step = container(spec, "uninstall", init=True)
    assert step["command"] == ["h2splitd", "--uninstall"]
    assert step["envFrom"] == [{"configMapRef": {"name": "h2split-config"}}]
    assert step["securityContext"]["privileged"] is True
    assert {m["mountPath"] for m in step["volumeMounts"]} == {"/sys/fs/bpf", "/sys/fs/cgroup"}


def test_dockerfile_builds_with_make_and_ships_both_binaries():
    with open(os.path.join(DEPLOY, "Dockerfile")) as f:
        text = f.read()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages == ["debian:12", "debian:12-slim"]
    assert re.search(r"^RUN make\b", text, re.M)
    runtime = text.split("FROM debian:12-slim", 1)[1]
    for pkg in ("libbpf1", "libelf1", "zlib1g", "libnghttp2-14", "libssl3", "libjson-c5",
                "libmicrohttpd12", "bpftool"):
        assert re.search(rf"\b{re.escape(pkg)}\b", runtime), pkg
    assert "-dev" not in runtime
    assert "build/h2splitd" in runtime and "build/h2splitctl" in runtime
