#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Write the seed corpora under tests/fuzz/corpus/<target>/ (checked in).

Run from anywhere: ``/usr/bin/python3 tests/fuzz/make_seeds.py``. HTTP/2
seeds are built with the frame and HPACK encoders of
tests/integration/h2raw.py, so they are valid where they mean to be.
Deterministic: rerunning rewrites the same bytes.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import h2raw as h  # noqa: E402

CORPUS = os.path.join(HERE, "corpus")


def svc(name, vip, ports, annotations=None, ns="default", typ="ClusterIP", vip6=None):
    spec = {"clusterIP": vip, "clusterIPs": [vip] + ([vip6] if vip6 else []), "type": typ,
            "ports": ports, "selector": {"app": name}}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}",
                         "resourceVersion": "10", "annotations": annotations or {}},
            "spec": spec}


def slice_(name, svc_name, addrs, ports, ns="default", family="IPv4", **cond):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "addressType": family,
            "metadata": {"name": name, "namespace": ns, "resourceVersion": "11",
                         "labels": {"kubernetes.io/service-name": svc_name}},
            "endpoints": [{"addresses": [a], "conditions": {"ready": True, "serving": True,
                                                           "terminating": False, **cond},
                           "targetRef": {"kind": "Pod", "name": f"{svc_name}-{i}",
                                         "namespace": ns}}
                          for i, a in enumerate(addrs)],
            "ports": ports}


def k8s_seeds():
    grpc_port = [{"name": "grpc", "port": 50051, "targetPort": 8080, "protocol": "TCP",
                  "appProtocol": "kubernetes.io/h2c"}]
    lst = {"apiVersion": "v1", "kind": "List", "items": [
        svc("greeter", "10.96.0.10", grpc_port),
        slice_("greeter-abc", "greeter", ["10.244.0.5", "10.244.0.6"],
               [{"name": "grpc", "port": 8080, "protocol": "TCP"}]),
    ]}
    dual = {"apiVersion": "v1", "kind": "List", "items": [
        svc("api", "10.96.0.20", [{"name": "h2", "port": 443, "targetPort": "h2",
                                   "protocol": "TCP", "appProtocol": "grpc"},
                                  {"name": "metrics", "port": 9090, "protocol": "TCP"}],
            annotations={"h2split.io/enabled": "true", "h2split.io/lb-policy": "round_robin",
                         "h2split.io/upstream-tls": "true"},
            vip6="fd00:10:96::20", typ="LoadBalancer"),
        slice_("api-v6", "api", ["fd00:10:244::7"], [{"name": "h2", "port": 8443}],
               family="IPv6"),
        slice_("api-v4", "api", ["10.244.0.7", "10.244.0.8"], [{"name": "h2", "port": 8443}],
               ready=False, terminating=True),
    ]}
    typed = {"apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "99"},
             "items": [{k: v for k, v in svc("plain", "10.96.0.30", [
                 {"port": 80, "protocol": "TCP"}]).items() if k != "kind"}]}
    single = svc("headless", "None", grpc_port)
    retry = {"maxAttempts": 3, "initialBackoff": "0.01s", "maxBackoff": "0.1s",
             "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE", 8],
             "methods": ["pkg.Svc/Get", "pkg.Other/"],
             "retryBudget": {"ratio": 0.2, "minPerSecond": 10}}
    policies = {"apiVersion": "v1", "kind": "List", "items": [
        svc("retried", "10.96.0.40", grpc_port, annotations={
            "h2split.io/retry-policy": json.dumps(retry),
            "h2split.io/hedging-policy": json.dumps({"maxAttempts": 2, "hedgingDelay": "0.01s",
                                                     "nonFatalStatusCodes": ["UNAVAILABLE"]}),
            "h2split.io/per-try-timeout": "250ms"}),
        svc("badpolicy", "10.96.0.41", grpc_port, annotations={
            "h2split.io/retry-policy": '{"maxAttempts": 9, "initialBackoff": "1ms"}',
            "h2split.io/hedging-policy": "{",
            "h2split.io/per-try-timeout": "soon"}),
    ]}
    return {
        "list.json": json.dumps(lst, indent=2),
        "dual_stack_tls.json": json.dumps(dual, indent=2),
        "typed_list.json": json.dumps(typed),
        "single_object.json": json.dumps(single),
        "truncated.json": json.dumps(lst)[:200],
        "retry_policies.json": json.dumps(policies, indent=2),
    }


def config_seeds():
    return {
        "file.txt": "--discovery\nfile\n--services-file\n/etc/h2split/services.json\n"
                    "--listen\n169.254.20.11:15001\n--listen\n[fd00::11]:15001\n--workers\n4\n"
                    "--lb-policy\nround_robin\n",
        "env.txt": "H2SPLIT_LISTEN=10.0.0.1:15001,[::1]:15002\nH2SPLIT_WORKERS=2\n"
                   "--services-file=/x.json\n--exclude-cgroup\n/sys/fs/cgroup/kube\n"
                   "--upstream-source\nnode\n--drain-timeout\n10\n--log-level\ndebug\n"
                   "--access-log\n",
        "kubernetes.txt": "--discovery\nkubernetes\n--kube-api\nhttps://10.0.0.1:6443\n"
                          "--kube-token-file\n/var/run/token\n--kube-ca-file\n/ca.crt\n"
                          "--node-name\nnode-1\n--upstream-ca-file\n/etc/ssl/ca.pem\n"
                          "--admin\n127.0.0.1:9901\n--bpffs\n/sys/fs/bpf/h2split\n",
        "bad.txt": "--listen\n[::1:80\n--workers\n-3\n--bogus\n",
        "flags.txt": "--uninstall\n--version\n--help\n--cgroup=/sys/fs/cgroup\n",
    }


def req(sid, timeout=None, end=True, body=None, extra=()):
    fields = h.request_fields("echo.default.svc", extra=list(extra) +
                              ([("grpc-timeout", timeout)] if timeout else []))
    out = h.headers(sid, h.encode(fields))
    return out + h.data(sid, body if body is not None else h.echo_request(), end_stream=end)


def downstream_seeds():
    s = h.settings([(h.S_INITIAL_WINDOW_SIZE, 1 << 20)])
    return {
        # first byte: the harness's mode (see fuzz_downstream.c)
        "unary_whole.bin": b"\x04" + s + req(1),
        "three_streams_chunked.bin": b"\x00" + s + req(1) + req(3) + h.ping() +
        h.window_update(0, 1 << 20) + req(5, end=False) + h.rst_stream(5, 8),
        "refused_retry.bin": b"\x06" + s + req(1) + req(3),
        "trailers_open_response.bin": b"\x05" + s +
        h.headers(1, h.encode(h.request_fields("echo"))) + h.data(1, h.echo_request()) +
        h.headers(1, h.encode([("x-trailer", "1")]), end_stream=True),
        "goaway_deadline.bin": b"\x0c" + s + req(1, timeout="1n") + req(3, timeout="5m"),
        "close_after_first.bin": b"\x14" + s + req(1) + req(3) + req(5),
        "rapid_reset.bin": b"\x04" + s + b"".join(
            h.headers(sid, h.encode(h.request_fields("echo"))) + h.rst_stream(sid, 8)
            for sid in range(1, 41, 2)),
        "continuation.bin": b"\x04" + s + h.headers(1, h.encode(h.request_fields("echo")),
                                                    end_stream=True, end_headers=False) +
        h.continuation(1, h.encode([("x-a", "b" * 50)]), end_headers=True),
        "hpack_dynamic.bin": b"\x04" + s + h.headers(1, h.lit_incremental("x-big", "v" * 200) +
                                                     h.encode(h.request_fields("echo")) +
                                                     h.indexed(62) * 20, end_stream=True),
        "not_grpc.bin": b"\x04" + s + h.headers(1, h.encode([
            (":method", "GET"), (":scheme", "http"), (":path", "/"),
            (":authority", "echo")]), end_stream=True),
        "data_on_stream0.bin": b"\x04" + s + h.frame(h.DATA, 0, 0, b"x"),
        "zero_window_client.bin": b"\x00" + h.settings([(h.S_INITIAL_WINDOW_SIZE, 0)]) +
        req(1) + h.window_update(1, 3),
        # RFC 9113 5.1.1: 3 was skipped when 5 opened; then trailers on 9 (open)
        # are fine, a HEADERS on 3 is a connection error.
        "headers_lower_id.bin": b"\x01" + s + req(5) + req(9, end=False) +
        h.headers(9, h.encode([("x-trailer", "1")]), end_stream=True) + req(3),
    }


def upstream_seeds():
    ok = h.encode(h.response_fields())
    msg = h.grpc_message(b'{"pod":"x"}\n' + b"y" * 20)
    trl = h.encode([("grpc-status", "0"), ("grpc-message", "ok")])

    def full(sid):
        return h.headers(sid, ok) + h.data(sid, msg) + h.headers(sid, trl, end_stream=True)
    ack = h.settings(ack=True)
    return {
        # first byte: the harness's mode (see fuzz_upstream.c)
        "three_responses.bin": b"\x02" + ack + full(1) + full(3) + full(5),
        "mcs1_refuse.bin": b"\x00" + h.settings([(h.S_MAX_CONCURRENT_STREAMS, 1)]) + ack +
        full(1) + h.rst_stream(3, 7) + h.rst_stream(5, 7),
        "interim_then_final.bin": b"\x02" + ack + h.headers(1, h.encode([(":status", "100")])) +
        full(1),
        # Retried (the harness's service has a retry policy), then answered.
        "retry_unavailable.bin": b"\x02" + ack + h.headers(1, h.encode(
            h.response_fields(extra=[("grpc-status", "14"), ("grpc-retry-pushback-ms", "1")])),
            end_stream=True) + h.rst_stream(3, 2) + full(5),
        "trailers_only.bin": b"\x02" + ack + h.headers(1, h.encode(
            h.response_fields(extra=[("grpc-status", "14"), ("grpc-message", "down")])),
            end_stream=True),
        "goaway_reset.bin": b"\x03" + ack + h.goaway(1, 0) + full(1) + h.rst_stream(3, 2),
        "padded_chunks.bin": b"\x06" + ack + h.headers(1, ok) +
        h.frame(h.DATA, h.PADDED, 1, b"\x10" + h.grpc_message(b"z" * 3000) + b"\0" * 16) +
        h.headers(1, trl, end_stream=True),
        "malformed_status.bin": b"\x02" + ack + h.headers(1, h.encode([("content-type", "x")]),
                                                          end_stream=True),
        "zero_window_big_body.bin": b"\x0a" + ack + h.headers(5, ok) +
        b"".join(h.data(5, b"w" * 16384) for _ in range(3)),
        "no_settings_garbage.bin": b"\x00" + b"\xff" * 9 + b"not http/2",
        # MAX_CONCURRENT_STREAMS 0: what was sent is refused, the retries find
        # no room (no new connection); then the limit is raised.
        "mcs0_refused.bin": b"\x00" + h.settings([(h.S_MAX_CONCURRENT_STREAMS, 0)]) + ack +
        h.rst_stream(1, 7) + h.rst_stream(3, 7) + h.rst_stream(5, 7),
        "mcs0_raised.bin": b"\x04" + h.settings([(h.S_MAX_CONCURRENT_STREAMS, 0)]) + ack +
        h.rst_stream(1, 7) + h.rst_stream(3, 7) + h.rst_stream(5, 7) + h.ping() * 12 +
        h.settings([(h.S_MAX_CONCURRENT_STREAMS, 100)]),
    }


def main():
    for target, seeds in (("k8s_objects", k8s_seeds()), ("config", config_seeds()),
                          ("downstream", downstream_seeds()), ("upstream", upstream_seeds())):
        d = os.path.join(CORPUS, target)
        os.makedirs(d, exist_ok=True)
        for name, content in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(content.encode() if isinstance(content, str) else content)
        print(f"{d}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
