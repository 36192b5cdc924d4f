# SPDX-License-Identifier: Apache-2.0
"""Proc: a subprocess.Popen that logs to a file and can be waited on line by line.

stderr (and stdout, unless watched) go to the process's log file. With
``watch=True`` stdout is read by a thread: every line is kept in ``lines``,
appended to the log, and handed to ``next_line()`` / ``wait_line()``, which
take a deadline and fail with the log's tail when the process dies.
"""

import os
import queue
import re
import signal
import subprocess
import threading
import time

_EOF = object()


class Proc(subprocess.Popen):
    """A tracked test bed process. Extra attributes: ``name``, ``log_path``, ``lines``."""

    def __init__(self, argv, name, log_path, watch=False, stop_signal=signal.SIGTERM, **kw):
        self.name = name
        self.log_path = log_path
        self.stop_signal = stop_signal
        self.lines = []
        self._q = queue.Queue()
        self._log = open(log_path, "a", buffering=1)
        self._log.write(f"$ {' '.join(map(str, argv))}\n")
        kw.setdefault("stderr", self._log)
        kw.setdefault("stdin", subprocess.DEVNULL)
        if watch:
            kw["stdout"] = subprocess.PIPE
            kw.update(text=True, bufsize=1)
        else:
            kw.setdefault("stdout", self._log)
        super().__init__(argv, **kw)
        self._reader = None
        if watch:
            self._reader = threading.Thread(target=self._read, daemon=True,
                                            name=f"read-{name}")
            self._reader.start()

    def _read(self):
        try:
            for line in iter(self.stdout.readline, ""):
                line = line.rstrip("\n")
                self.lines.append(line)
                try:
                    self._log.write(line + "\n")
                except ValueError:  # log closed at teardown
                    pass
                self._q.put(line)
        finally:
            self._q.put(_EOF)

    def next_line(self, timeout=30.0, what=None):
        """The next stdout line (watched processes only); raise on timeout or exit."""
        try:
            line = self._q.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.name}: no output after {timeout:g}s"
                               f"{' waiting for ' + what if what else ''}\n"
                               f"{self.log_tail()}") from None
        if line is _EOF:
            self._q.put(_EOF)
            try:
                self.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            raise RuntimeError(f"{self.name}: exited (status {self.returncode})"
                               f"{' before ' + what if what else ''}\n{self.log_tail()}")
        return line

    def wait_line(self, pattern, timeout=30.0):
        """Skip stdout lines until one matches regex ``pattern``; return that line."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            left = max(0.0, deadline - time.monotonic())
            line = self.next_line(left, what=f"a line matching {pattern!r}")
            if rx.search(line):
                return line

    def log_tail(self, n=30):
        """The last ``n`` lines of the log file, for failure messages."""
        try:
            with open(self.log_path, errors="replace") as f:
                tail = f.readlines()[-n:]
        except OSError:
            return ""
        return f"--- {self.name} log ({self.log_path}) ---\n" + "".join(tail)

    def stop(self, timeout=5.0):
        """Send ``stop_signal``, wait up to ``timeout``, then SIGKILL. Returns the status."""
        if self.poll() is None:
            try:
                self.send_signal(self.stop_signal)
            except ProcessLookupError:
                pass
            try:
                self.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                self.wait(timeout=5)
        self._close()
        return self.returncode

    def _close(self):
        for f in (self.stdin,):
            try:
                if f:
                    f.close()
            except OSError:
                pass
        if self._reader:
            self._reader.join(timeout=2)
        try:
            self._log.close()
        except OSError:
            pass

    def __repr__(self):
        return f"<Proc {self.name} pid={self.pid} rc={self.returncode}>"


def safe_name(s):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)[:60]


def log_path(logdir, base):
    """A fresh log file path under ``logdir`` for ``base`` (numbered when reused)."""
    base = safe_name(base)
    path = os.path.join(logdir, base + ".log")
    n = 1
    while os.path.exists(path):
        n += 1
        path = os.path.join(logdir, f"{base}.{n}.log")
    return path
