# SPDX-License-Identifier: Apache-2.0
"""Client: drive a ``testbed.grpc_client --interactive`` process from a test.

The process holds ONE gRPC channel for its whole life, so a test can run
RPCs, change the bed (add a pod, move endpoints, start h2splitd) and run
more on the SAME channel. Each method sends one command and returns the
JSON answer as a dict (see testbed/grpc_client.py for the summary keys).
"""

import json
import subprocess

from .util import python


class Client:
    """One long-lived gRPC channel from a pod (or the node) to ``target``."""

    def __init__(self, place, target, options=None, metadata=None, timeout=15, wait=True):
        cmd = [python(), "-m", "testbed.grpc_client", "--target", target, "--interactive"]
        for k, v in (options or {}).items():
            cmd += ["--option", f"{k}={v}"]
        for k, v in (metadata or {}).items():
            cmd += ["--metadata", f"{k}={v}"]
        self.place = place
        self.target = target
        self.proc = place.popen(cmd, name="grpc-client", watch=True, stdin=subprocess.PIPE)
        self._sent = []
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout=15):
        """Wait for the process to say it is up (the channel exists, not yet connected)."""
        self.proc.wait_line(r'^\{"ready"', timeout)
        return self

    def send(self, line):
        """Send one command line without waiting; ``receive()`` returns its answer."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.proc.name} exited\n{self.proc.log_tail()}")
        self.proc.stdin.write(line.strip() + "\n")
        self.proc.stdin.flush()
        self._sent.append(line.strip())

    def receive(self, timeout=60):
        """The answer (dict) to the oldest command sent and not yet received."""
        line = self._sent.pop(0) if self._sent else "?"
        return json.loads(self.proc.next_line(timeout, what=f"answer to {line!r}"))

    def command(self, line, timeout=60):
        """Send one command line; return its JSON answer (dict)."""
        self.send(line)
        return self.receive(timeout)

    @staticmethod
    def _line(cmd, n, request):
        return f"{cmd} {n} {json.dumps(request, separators=(',', ':'))}" if request \
            else f"{cmd} {n}"

    def unary(self, n=1, timeout=60, **request):
        """``n`` unary RPCs, one after another (``concurrency=k`` for k in flight).

        Keyword arguments are the request (size, status, message, delay_ms,
        echo, ...) plus the client keys metadata, timeout (per RPC, in the
        request dict as ``rpc_timeout``), wait_for_ready, req_size.
        """
        return self.command(self._line("unary", n, _rpc_keys(request)), timeout)

    def server_stream(self, count=1, timeout=60, **request):
        """One ServerStream RPC asking for ``count`` responses."""
        return self.command(self._line("server_stream", count, _rpc_keys(request)), timeout)

    def client_stream(self, n=1, timeout=60, **request):
        """One ClientStream RPC sending ``n`` messages."""
        return self.command(self._line("client_stream", n, _rpc_keys(request)), timeout)

    def bidi(self, n=1, timeout=60, **request):
        """One Bidi RPC sending ``n`` messages and reading every response."""
        return self.command(self._line("bidi", n, _rpc_keys(request)), timeout)

    def start(self, cmd, n=1, **request):
        """Run ``cmd`` ("unary", "server_stream", ...) in the background; returns its id."""
        ans = self.command("& " + self._line(cmd, n, _rpc_keys(request)), 10)
        return ans["started"]

    def loop(self, pace_ms=5, **request):
        """Start unary RPCs paced ``pace_ms`` apart in the background, until
        ``stop_loop``; ``fresh=True`` opens a new channel for every RPC.
        Returns the job id."""
        return self.start("loop", pace_ms, **request)

    def progress(self):
        """The running loop's summary so far (n, ok, errors, pods ...)."""
        return self.command("progress")

    def wait_progress(self, more, timeout=60):
        """Wait until the running loop has finished ``more`` RPCs beyond now."""
        from .util import wait_for
        start = self.progress()["n"]
        return wait_for(lambda: (p := self.progress())["n"] >= start + more and p, timeout,
                        f"{self.proc.name}'s loop to run {more} more RPCs")

    def stop_loop(self, job, timeout=60):
        """End the running loop; its whole summary."""
        self.command("stop")
        return self.wait(job, timeout)

    def wait(self, job, timeout=60):
        """The summary of background command ``job`` once it finishes."""
        return self.command(f"wait {job} {timeout}", timeout + 5)

    def stats(self):
        """Counters of the pod this channel reaches (Stats RPC)."""
        return self.command("stats")

    def connect(self, timeout=10):
        """Wait until the channel is READY; returns {"state": ...}."""
        return self.command(f"connect {timeout}", timeout + 5)

    def state(self):
        return self.command("state")["state"]

    def close(self, timeout=5):
        """Close the channel and end the process."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.proc.stop(timeout=1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def open_clients(places, target, timeout=30, **kw):
    """One Client per place (all to ``target``), started in parallel; returns the list."""
    clients = [Client(p, target, wait=False, **kw) for p in places]
    for c in clients:
        c.wait_ready(timeout)
    return clients


def unary_all(clients, n, timeout=60, **request):
    """Run ``n`` unary RPCs on every client at once; returns their summaries in order."""
    for c in clients:
        c.send(Client._line("unary", n, _rpc_keys(request)))
    return [c.receive(timeout) for c in clients]


def _rpc_keys(request):
    # ``timeout`` is taken by the Python call itself; ``rpc_timeout`` is the
    # per-RPC deadline the grpc_client process applies.
    req = dict(request)
    if "rpc_timeout" in req:
        req["timeout"] = req.pop("rpc_timeout")
    return req
