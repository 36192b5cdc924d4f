# SPDX-License-Identifier: Apache-2.0
"""The test bed's stand-in for a socket load balancer (socklb.bpf.c): build it
with clang, load it with bpftool (program and map pinned under the bed's
bpffs dir, which the bed's cleanup removes), point ClusterIP:ports at pods,
and attach it to a cgroup of the bed as Cilium or Calico would: a bpf_link,
connect4 and connect6, optionally with BPF_F_PREORDER / BPF_F_BEFORE (Linux 6.17+), pinned so it
outlives this process; ``detach`` undoes that. Never a cgroup outside the bed."""

import ctypes
import json
import os
import platform
import socket
import struct
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "socklb.bpf.c")

BPF_OBJ_PIN, BPF_OBJ_GET, BPF_PROG_ATTACH, BPF_PROG_DETACH = 6, 7, 8, 9
BPF_LINK_CREATE, BPF_LINK_DETACH = 28, 34
BPF_F_ALLOW_OVERRIDE = 1 << 0
HOOKS = {"connect4": 10, "connect6": 11}  # BPF_CGROUP_INET4/6_CONNECT
BPF_F_BEFORE, BPF_F_PREORDER = 1 << 3, 1 << 6
_NR_BPF = {"x86_64": 321, "aarch64": 280}
_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    r = _libc.syscall(_NR_BPF[platform.machine()], cmd, buf, len(buf))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"bpf({cmd}): {os.strerror(e)}")
    return r


def _path_attr(path, fd=0):
    p = ctypes.create_string_buffer(path.encode())
    return p, struct.pack("QII", ctypes.addressof(p), fd, 0)


def obj_get(path):
    keep, attr = _path_attr(path)
    return _bpf(BPF_OBJ_GET, attr)


def obj_pin(fd, path):
    keep, attr = _path_attr(path, fd)
    _bpf(BPF_OBJ_PIN, attr)


def bpftool(*args):
    out = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"bpftool {' '.join(args)}: {out.stderr.strip() or out.stdout}")
    return json.loads(out.stdout) if out.stdout.strip() else None


class SockLB:
    """One loaded stand-in: ``set(vip, port, pod_ip)``, ``attach(cgroup, ...)``."""

    def __init__(self, node):
        self.node = node
        self.dir = os.path.join(node.bpffs, "socklb")
        os.makedirs(self.dir, exist_ok=True)
        obj = os.path.join(node.workdir, "socklb.bpf.o")
        arch = subprocess.run(["gcc", "-print-multiarch"], capture_output=True,
                              text=True).stdout.strip()
        subprocess.run(["clang", "-O2", "-g", "-target", "bpf",
                        *([f"-I/usr/include/{arch}"] if arch else []), "-c", SRC, "-o", obj],
                       check=True, timeout=120)
        progs = os.path.join(self.dir, "progs")
        bpftool("prog", "loadall", obj, progs, "pinmaps", self.dir)
        self.map_pin = os.path.join(self.dir, "socklb_services")
        self.prog_pins = {h: os.path.join(progs, f"socklb_{h}") for h in HOOKS}
        self.prog_ids = {h: bpftool("prog", "show", "pinned", p)["id"]
                         for h, p in self.prog_pins.items()}
        self.links = []
        self.overrides = []  # cgroups with the old-style attachment (attach_override)

    def set(self, vip, port, ip, backend_port=None):
        """Rewrite connects to vip:port to ip:backend_port (default port)."""
        key = socket.inet_aton(vip) + struct.pack(">H", port) + b"\0\0"
        val = (socket.inet_aton(ip) + struct.pack(">H", backend_port or port) + b"\0\0" +
               b"\0" * 8)
        bpftool("map", "update", "pinned", self.map_pin, "key", "hex",
                *[f"{x:02x}" for x in key], "value", "hex", *[f"{x:02x}" for x in val])

    def hits(self, vip, port):
        """Connects to vip:port the stand-in rewrote so far."""
        want = (int.from_bytes(socket.inet_aton(vip), "little"),
                int.from_bytes(struct.pack(">H", port), "little"))
        for e in bpftool("map", "dump", "pinned", self.map_pin):
            k, v = e.get("formatted", e)["key"], e.get("formatted", e)["value"]
            if (k["vip"], k["port"]) == want:
                return v["hits"]
        raise KeyError(f"{vip}:{port} not in the stand-in's map")

    def attach(self, cgroup, preorder=False, before=False):
        """Attach connect4 and connect6 to ``cgroup`` (a bed cgroup), each with a
        pinned bpf_link; returns the pins' paths for ``detach``."""
        assert cgroup.startswith(self.node.cgroup_root), cgroup
        flags = (BPF_F_PREORDER if preorder else 0) | (BPF_F_BEFORE if before else 0)
        pins = []
        cg = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for hook, attach_type in HOOKS.items():
                pin = os.path.join(self.dir, f"link{len(self.links)}")
                prog = obj_get(self.prog_pins[hook])
                try:
                    link = _bpf(BPF_LINK_CREATE, struct.pack("IIII", prog, cg, attach_type,
                                                             flags))
                finally:
                    os.close(prog)
                try:
                    obj_pin(link, pin)
                finally:
                    os.close(link)
                self.links.append(pin)
                pins.append(pin)
        finally:
            os.close(cg)
        return pins

    def detach(self, pins):
        for pin in pins:
            fd = obj_get(pin)
            try:
                _bpf(BPF_LINK_DETACH, struct.pack("I", fd))
            finally:
                os.close(fd)
            os.unlink(pin)
            self.links.remove(pin)

    def attach_override(self, cgroup):
        """The old style: BPF_PROG_ATTACH with BPF_F_ALLOW_OVERRIDE (no link), as
        tools before bpf_link did; a program attached below replaces it there."""
        assert cgroup.startswith(self.node.cgroup_root), cgroup
        self._prog_attach(BPF_PROG_ATTACH, cgroup, BPF_F_ALLOW_OVERRIDE)
        self.overrides.append(cgroup)

    def _prog_attach(self, cmd, cgroup, flags=0):
        cg = os.open(cgroup, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for hook, attach_type in HOOKS.items():
                prog = obj_get(self.prog_pins[hook])
                try:
                    _bpf(cmd, struct.pack("IIII", cg, prog, attach_type, flags))
                finally:
                    os.close(prog)
        finally:
            os.close(cg)

    def detach_all(self):
        self.detach(list(self.links))
        for cgroup in self.overrides:
            self._prog_attach(BPF_PROG_DETACH, cgroup)
        self.overrides.clear()
