# SPDX-License-Identifier: Apache-2.0
"""The proxies h2split is compared with, configured alike.

Each listens for h2c on the node's own address (169.254.1.1, reachable from
every pod), balances every request (not every connection) round-robin over
the same backend pods, runs the same number of workers as h2splitd, and gets
the flow-control windows h2splitd uses (256 KiB per stream, 16 MiB per
connection) where it has a knob for them. Access logs are off.
"""

import os

NODE_IP = "169.254.1.1"
STREAM_WINDOW = 256 * 1024
CONN_WINDOW = 16 * 1024 * 1024
# The process fd limit here is 20000 and cannot be raised (no CAP_SYS_RESOURCE
# in this container): every proxy is sized to stay under it.
MAX_CONNS = 9500


class Peer:
    name = None
    port = None
    tool = None

    def __init__(self, workdir, workers, backends):
        self.workdir = os.path.join(workdir, self.name)
        os.makedirs(self.workdir, exist_ok=True)
        self.workers = workers
        self.backends = backends  # [(ip, port)]

    @property
    def url_base(self):
        return f"http://{NODE_IP}:{self.port}"

    def argv(self):
        raise NotImplementedError

    def describe(self):
        """The exact command line (and config file, if any) for the docs."""
        return {"argv": self.argv(), "config": self.config_text()}

    def config_text(self):
        return None

    def start(self, node):
        cfg = self.config_text()
        if cfg is not None:
            with open(self.config_path(), "w") as f:
                f.write(cfg)
        return node.popen(self.argv(), name=self.name)

    def config_path(self):
        return None


class Nghttpx(Peer):
    name, port, tool = "nghttpx", 15101, "nghttpx"

    def argv(self):
        a = ["nghttpx", "--conf=/dev/null", f"--frontend={NODE_IP},{self.port};no-tls",
             f"--workers={self.workers}", "--log-level=WARN",
             f"--frontend-http2-window-size={STREAM_WINDOW}",
             f"--frontend-http2-connection-window-size={CONN_WINDOW}",
             f"--backend-http2-window-size={STREAM_WINDOW}",
             f"--backend-http2-connection-window-size={CONN_WINDOW}",
             f"--worker-frontend-connections={MAX_CONNS}"]
        return a + [f"--backend={ip},{port};;proto=h2" for ip, port in self.backends]


class Haproxy(Peer):
    name, port, tool = "haproxy", 15102, "haproxy"

    def config_path(self):
        return os.path.join(self.workdir, "haproxy.cfg")

    def argv(self):
        return ["haproxy", "-db", "-f", self.config_path()]

    def config_text(self):
        servers = "\n".join(f"    server be{i} {ip}:{port} proto h2"
                            for i, (ip, port) in enumerate(self.backends))
        return f"""global
    nbthread {self.workers}
    maxconn {MAX_CONNS}
    tune.h2.initial-window-size {STREAM_WINDOW}
defaults
    mode http
    timeout connect 5s
    timeout client 600s
    timeout server 600s
frontend fe
    bind {NODE_IP}:{self.port} proto h2
    default_backend be
backend be
    balance roundrobin
    http-reuse always
{servers}
"""


class Nginx(Peer):
    name, port, tool = "nginx", 15103, "nginx"

    def config_path(self):
        return os.path.join(self.workdir, "nginx.conf")

    def argv(self):
        return ["nginx", "-p", self.workdir, "-c", self.config_path(), "-e", "stderr"]

    def config_text(self):
        d = self.workdir
        servers = "\n".join(f"        server {ip}:{port};" for ip, port in self.backends)
        return f"""worker_processes {self.workers};
worker_rlimit_nofile 20000;
daemon off;
pid {d}/nginx.pid;
error_log stderr warn;
events {{ worker_connections {MAX_CONNS}; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000000;
    keepalive_timeout 600s;
    client_body_buffer_size 128k;
    http2_body_preread_size {STREAM_WINDOW};
    upstream be {{
{servers}
        keepalive 1024;
        keepalive_requests 1000000000;
        keepalive_timeout 600s;
    }}
    server {{
        listen {NODE_IP}:{self.port} http2;
        location / {{ grpc_pass grpc://be; }}
    }}
}}
"""


ALL = {p.name: p for p in (Nghttpx, Haproxy, Nginx)}
