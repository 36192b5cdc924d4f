# SPDX-License-Identifier: Apache-2.0
"""Build the grpc-go test client (tests/testbed/go_client) offline, once.

Debian's golang-go (1.19) and golang-google-grpc-dev (1.33) are enough: the
client builds in GOPATH mode against /usr/share/gocode, no module download.
The binary is cached in <build>/go/ and rebuilt when main.go is newer.
``go_client(build_dir)`` returns its path, or raises TestbedError naming the
packages to install (`.ci/deps` lists them).
"""

import os
import shutil
import subprocess

from .util import TestbedError

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "go_client")
GOPATH = "/usr/share/gocode"


def go_client(build_dir):
    out_dir = os.path.join(build_dir, "go")
    binary = os.path.join(out_dir, "h2s-go-client")
    main = os.path.join(SRC, "main.go")
    if os.path.exists(binary) and os.path.getmtime(binary) >= os.path.getmtime(main):
        return binary
    if not shutil.which("go") or not os.path.isdir(os.path.join(GOPATH, "src/google.golang.org/grpc")):
        raise TestbedError("grpc-go client: needs golang-go and golang-google-grpc-dev "
                           "(make deps installs them)")
    os.makedirs(out_dir, exist_ok=True)
    env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOFLAGS="",
               GOCACHE=os.path.join(out_dir, "cache"))
    r = subprocess.run(["go", "build", "-o", binary + ".tmp", "."], cwd=SRC, env=env,
                       capture_output=True, text=True, timeout=600)
    if r.returncode:
        raise TestbedError(f"go build of the grpc-go test client failed:\n{r.stderr[-2000:]}")
    os.replace(binary + ".tmp", binary)
    return binary
