# SPDX-License-Identifier: Apache-2.0
"""A plain grpcio client: ONE channel, a unary Echo RPC every ``--pace-ms``,
until SIGTERM. Every ``--report-ms`` it prints its summary so far as one JSON
line (n, ok, errors {CODE: n}, details, pods {pod: n}), and a last one at
the end; the same lines as the grpc-go client (testbed/go_client).

Unlike ``testbed.grpc_client`` it does not subscribe to the channel's
connectivity (``--watch`` does): without a watcher gRPC core polls the
channel's socket only while an RPC runs, which is what most apps do.
``--retry`` gives the channel a service config that retries UNAVAILABLE.

    python3 -m testbed.grpc_loop --target 10.96.0.1:50051 --pace-ms 10
"""

import argparse
import json
import signal
import sys
import threading
import time

import grpc

from . import echo

RETRY_CONFIG = json.dumps({"methodConfig": [{
    "name": [{"service": echo.SERVICE}],
    "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
                    "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]})


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    ap.add_argument("--pace-ms", type=float, default=10)
    ap.add_argument("--report-ms", type=float, default=50)
    ap.add_argument("--watch", action="store_true", help="subscribe to connectivity")
    ap.add_argument("--retry", action="store_true", help="retry UNAVAILABLE (service config)")
    ap.add_argument("--wait-for-ready", action="store_true")
    a = ap.parse_args(argv)
    opts = [("grpc.service_config", RETRY_CONFIG)] if a.retry else []
    ch = grpc.insecure_channel(a.target, options=opts)
    if a.watch:
        ch.subscribe(lambda s: None, try_to_connect=False)
    grpc.channel_ready_future(ch).result(timeout=15)
    print('{"ready": true}', flush=True)
    lock = threading.Lock()
    s = {"n": 0, "ok": 0, "errors": {}, "details": [], "pods": {}}
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def report():
        with lock:
            line = json.dumps(s)
        print(line, flush=True)

    def reporter():
        while not stop.wait(a.report_ms / 1000.0):
            report()
    threading.Thread(target=reporter, daemon=True).start()
    call = ch.unary_unary(echo.path("Unary"))
    due = time.monotonic()
    while not stop.is_set():
        try:
            resp = call(echo.encode({}), timeout=5, wait_for_ready=a.wait_for_ready or None)
            pod = echo.decode(resp)[0].get("pod", "?")
            with lock:
                s["n"] += 1
                s["ok"] += 1
                s["pods"][pod] = s["pods"].get(pod, 0) + 1
        except grpc.RpcError as e:
            with lock:
                s["n"] += 1
                s["errors"][e.code().name] = s["errors"].get(e.code().name, 0) + 1
                if len(s["details"]) < 20:
                    s["details"].append(e.details())
        due += a.pace_ms / 1000.0
        pause = due - time.monotonic()
        if pause > 0:
            stop.wait(pause)
        else:
            due = time.monotonic()
    report()
    ch.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
