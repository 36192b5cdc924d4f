# SPDX-License-Identifier: Apache-2.0
"""Wire format of the test service ``h2split.test.Echo`` (no protobuf, no codegen).

A message is a compact JSON header, a newline, then raw payload bytes::

    {"size": 100, "status": 0}\\n<payload>

Request header keys (all optional) understood by the server:
  size        bytes of payload in each response (default 0)
  count       ServerStream: number of responses (default 1)
  delay_ms    sleep before each response (default: the server's --delay-ms)
  gap_ms      ServerStream: also sleep this long before each message but the first
  status      finish the RPC with this gRPC status code after the responses
              (Unary: instead of the response); message: its details string
  echo        true: each response's payload is the request's payload
Response header keys: pod, peer (context.peer() as the server saw it, with
gRPC's percent-encoding undone: "ipv4:10.244.0.4:41234", "ipv6:[fd00::4]:4123"),
method, seq (0-based message index), received (request messages so far),
req_bytes (request payload bytes so far), size (payload bytes that follow).
Stats (unary, empty request) answers with the server's counters.
"""

import json

SERVICE = "h2split.test.Echo"
METHODS = ("Unary", "ServerStream", "ClientStream", "Bidi", "Stats")


def path(method):
    return f"/{SERVICE}/{method}"


def encode(header, payload=b""):
    return json.dumps(header, separators=(",", ":")).encode() + b"\n" + payload


def decode(data):
    """(header dict, payload bytes) of a message; an empty message is ({}, b"")."""
    if not data:
        return {}, b""
    head, _, payload = data.partition(b"\n")
    return json.loads(head), payload


def peer_addr(peer):
    """(ip, port) of a peer string: "ipv4:10.244.0.4:41234" -> ("10.244.0.4", 41234),
    "ipv6:[fd00:10:244::4]:4123" -> ("fd00:10:244::4", 4123)."""
    _, _, rest = peer.partition(":")
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)
