#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Includes only go down the folder map (docs/architecture.md, "Folders").

Every #include "..." in userspace/, bpf/ and include/ is resolved to a file,
each file belongs to its folder, and a folder may include only itself and the
folders ALLOWED lists for it. Headers in PRIVATE are for their own folder
only. Includes name their folder ("base/loop.h"), never lean on the including
file's directory. Header include cycles are reported too. Exit status 1 with
one line per finding (file:line, the header, why); tests/unit and tests/fuzz
are not checked (a test may reach into any layer).

Usage: tests/check_layers.py [repo root]
"""
import os
import re
import sys

# The folder map, lowest first: folder -> the folders it may include besides
# itself. This is the one place the order is written down.
ALLOWED = {
    "include": set(),  # the BPF/userspace ABI: shared structs, no code
    "bpf": {"include"},  # the kernel programs
    "base": {"include"},  # loop, log, config, state, snapshots, counters
    "kernel": {"include", "base"},  # BPF loading and maps, cgroups, netns, addresses
    "discovery": {"include", "base"},  # desired state from a file or Kubernetes
    "balancer": {"include", "base"},  # endpoint choice, outlier ejection, health checks
    "telemetry": {"include", "base"},  # per-worker metric tables, Prometheus text
    "proxy/h2": {"include", "base", "kernel", "balancer", "telemetry"},  # HTTP/2 splitter
    "proxy": {"include", "base", "kernel", "balancer", "telemetry", "proxy/h2"},  # workers, L4
    "daemon": {"include", "base", "kernel", "discovery", "balancer", "telemetry", "proxy",
               "proxy/h2"},  # main(), wiring, admin API
    "ctl": {"include", "base", "kernel"},  # the CLI: the kernel side only
}

# Headers only their own folder may include (resolved path -> folder).
PRIVATE = {
    "build/h2split.skel.h": "kernel",  # generated; only the loader opens the skeleton
    "userspace/proxy/h2/splitter_int.h": "proxy/h2",  # the splitter's modules share it
    "userspace/kernel/bpf_maps_int.h": "kernel",  # the map dump bpf_maps*.c share
    "userspace/kernel/bpf_loader_int.h": "kernel",  # the pin root default, for bpf_preflight.c
    "userspace/ctl/ctl.h": "ctl",  # h2splitctl's files: struct ctl, commands, admin client
    "userspace/discovery/k8s_source.h": "discovery",  # the Kubernetes source's two files
    "userspace/discovery/k8s_objects_int.h": "discovery",  # the object store's parsers and build
    "userspace/telemetry/metrics_int.h": "telemetry",  # the tables and their Prometheus text
    "userspace/balancer/balancer_int.h": "balancer",  # endpoint, service and set state
    "userspace/balancer/policy.h": "balancer",  # the policy interface
    "userspace/balancer/latency.h": "balancer",  # the latency estimator
    "userspace/daemon/admin_int.h": "daemon",  # the admin reply and JSON helpers
}

# Generated headers: name as written -> where it stands for (made by the Makefile).
GENERATED = {"h2split.skel.h": "build/h2split.skel.h"}

# Upward or sideways includes today's code still needs; each is to be cut by
# a later refactor (phase 2 of "A tree that shows the design"). Keyed by
# (including file, included file); the value says why it is there.
KNOWN_EXCEPTIONS = {
}

# Header cycles allowed for now, as sets of files; each to be cut.
KNOWN_CYCLES = []

ROOTS = ["include", "userspace"]  # -Iinclude -Iuserspace, in the compiler's order
SCANNED = ["userspace", "bpf", "include"]
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def folder_of(path):
    """'userspace/proxy/h2/x.c' -> 'proxy/h2'; 'bpf/x.c' -> 'bpf'; None: not in a folder."""
    if path in PRIVATE and path.startswith("build/"):
        return PRIVATE[path]
    parts = path.split("/")
    if parts[0] == "userspace":
        return "/".join(parts[1:-1]) or None
    return parts[0]


def sources(repo):
    for top in SCANNED:
        for d, _, files in os.walk(os.path.join(repo, top)):
            for f in sorted(files):
                if f.endswith((".c", ".h")):
                    yield os.path.relpath(os.path.join(d, f), repo)


def resolve(repo, src, name):
    """(resolved path, how): how is 'root', 'local' (next to the includer) or None."""
    if name in GENERATED:
        return GENERATED[name], "root"
    local = os.path.normpath(os.path.join(os.path.dirname(src), name))
    if os.path.isfile(os.path.join(repo, local)):
        for root in ROOTS:
            if os.path.normpath(os.path.join(root, name)) == local:
                return local, "root"
        return local, "local"
    for root in ROOTS:
        p = os.path.normpath(os.path.join(root, name))
        if os.path.isfile(os.path.join(repo, p)):
            return p, "root"
    return None, None


def cycles(graph):
    """Strongly connected components with a cycle (Tarjan), each a sorted list."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(repo):
    errors, used, n_incl = [], set(), 0
    graph = {}
    files = list(sources(repo))
    for src in files:
        sf = folder_of(src)
        if sf not in ALLOWED:
            what = f"folder {sf}/ is not in the folder map" if sf else "not in a folder"
            errors.append(f"{src}: {what}: put the file in one of the map's folders, or add "
                          "its folder to ALLOWED in tests/check_layers.py and "
                          "docs/architecture.md")
            continue
        with open(os.path.join(repo, src)) as f:
            lines = f.readlines()
        for ln, line in enumerate(lines, 1):
            m = INCLUDE_RE.match(line)
            if not m:
                continue
            n_incl += 1
            name = m.group(1)
            where = f"{src}:{ln}: #include \"{name}\""
            dst, how = resolve(repo, src, name)
            if dst is None:
                errors.append(f"{where}: no such header under {', '.join(ROOTS)}")
                continue
            if how == "local":
                rel = os.path.relpath(dst, "userspace")
                errors.append(f"{where}: name its folder: #include \"{rel}\"")
            if src.endswith(".h"):
                graph.setdefault(src, set()).add(dst)
            df = folder_of(dst)
            if dst in PRIVATE and PRIVATE[dst] != sf:
                why = f"{dst} is private to {PRIVATE[dst]}/"
            elif df == sf or df in ALLOWED[sf]:
                continue
            else:
                why = (f"{sf}/ may not include {df}/ (it may include: "
                       f"{', '.join(sorted(ALLOWED[sf])) or 'nothing'})")
            if (src, dst) in KNOWN_EXCEPTIONS:
                used.add((src, dst))
                continue
            errors.append(f"{where}: {why}")
    for key in sorted(set(KNOWN_EXCEPTIONS) - used):
        errors.append(f"tests/check_layers.py: known exception {key[0]} -> {key[1]} is no longer "
                      "needed: remove it from KNOWN_EXCEPTIONS")
    known_cycles = [sorted(c) for c in KNOWN_CYCLES]
    found = cycles(graph)
    for c in found:
        if c not in known_cycles:
            errors.append(f"include cycle among headers: {', '.join(c)}")
    for c in known_cycles:
        if c not in found:
            errors.append(f"tests/check_layers.py: known cycle {c} is gone: remove it from "
                          "KNOWN_CYCLES")
    return errors, len(files), n_incl


def main(argv):
    repo = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    errors, n_files, n_incl = check(os.path.abspath(repo))
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print(f"check_layers: {len(errors)} problem(s); the folder map and its order are in "
              "tests/check_layers.py (ALLOWED) and docs/architecture.md", file=sys.stderr)
        return 1
    print(f"check_layers: {n_files} files, {n_incl} includes go down the folder map "
          f"({len(KNOWN_EXCEPTIONS)} known exceptions, {len(KNOWN_CYCLES)} known cycles, "
          "to be cut)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
