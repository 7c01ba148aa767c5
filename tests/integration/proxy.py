"""Allow-listing proxies for the integration-test hosts (stdlib only).

Test hosts live in network namespaces with no route to the outside world (IP forwarding stays off). The only way
out is this module, running on the machine under test and listening on the host side of each host's veth:

* an HTTP forward proxy for apt that forwards ``GET``/``HEAD`` only to the Debian mirror hosts this machine's own
  apt sources name (plain HTTP, port 80);
* an HTTPS ``CONNECT`` proxy that opens tunnels only to the package-index hosts pip uses (port 443).

Everything else is answered with 403 and logged. One accept thread serves every listener; connections are handled
by a bounded thread pool, and :meth:`FilteringProxy.stop` closes listeners and live connections and joins all
threads.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import selectors
import socket
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

LOG = logging.getLogger("dlsetup.tests.proxy")
LOG.setLevel(logging.INFO)

APT = "apt"
CONNECT = "connect"

MAX_CONNECTIONS = 64
CLIENT_IDLE_TIMEOUT_S = 60.0
UPSTREAM_TIMEOUT_S = 60.0
TUNNEL_IDLE_TIMEOUT_S = 300.0
_CHUNK = 64 * 1024

# Headers that describe one hop, not the message (RFC 9110 §7.6.1); never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


class _Handler(BaseHTTPRequestHandler):
    """Common parts: logging through :data:`LOG`, HTTP/1.1 keep-alive."""

    protocol_version = "HTTP/1.1"
    server_version = "dlsetup-test-proxy"
    server: FilteringProxy  # type: ignore[assignment]  # we drive handlers ourselves

    def log_message(self, format: str, *args: object) -> None:
        LOG.debug("%s %s", self.client_address[0], format % args)

    def deny(self, what: str) -> None:
        self.server.count("denied")
        LOG.warning("proxy: denied %s %s from %s", self.command, what, self.client_address[0])
        self.send_error(403, "dlsetup test proxy: destination not allowed")


class _AptHandler(_Handler):
    """Forward ``GET``/``HEAD`` for ``http://<allowed mirror host>/...`` (absolute-form request targets)."""

    def setup(self) -> None:
        super().setup()
        self._upstreams: dict[str, http.client.HTTPConnection] = {}

    def finish(self) -> None:
        for conn in self._upstreams.values():
            conn.close()
        super().finish()

    def do_GET(self) -> None:
        self._forward()

    def do_HEAD(self) -> None:
        self._forward()

    def _forward(self) -> None:
        target = urlsplit(self.path)
        host = (target.hostname or "").lower()
        try:
            port = target.port or 80
        except ValueError:
            port = -1
        if target.scheme != "http" or host not in self.server.apt_hosts or port != 80:
            self.deny(self.path)
            return
        path = (target.path or "/") + (f"?{target.query}" if target.query else "")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Host"] = host
        try:
            response = self._request(host, path, headers)
        except (OSError, http.client.HTTPException) as exc:
            LOG.warning("proxy: upstream %s failed: %s", host, exc)
            self.send_error(502, f"dlsetup test proxy: upstream failed: {exc}")
            return
        self.server.count("apt")
        self._relay_response(host, response)

    def _request(self, host: str, path: str, headers: dict[str, str]) -> http.client.HTTPResponse:
        # One retry on a fresh connection: the mirror may have closed an idle keep-alive connection.
        for attempt in (1, 2):
            conn = self._upstreams.get(host)
            if conn is None:
                conn = self._upstreams[host] = http.client.HTTPConnection(host, 80, timeout=UPSTREAM_TIMEOUT_S)
            try:
                conn.request(self.command, path, headers=headers)
                return conn.getresponse()
            except (OSError, http.client.HTTPException):
                self._upstreams.pop(host).close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _relay_response(self, host: str, response: http.client.HTTPResponse) -> None:
        has_body = self.command != "HEAD" and response.status >= 200 and response.status not in (204, 304)
        length = response.getheader("Content-Length")
        body = b""
        if has_body and length is None:
            # Chunked or close-delimited upstream: buffer it so the client gets a Content-Length.
            body = response.read()
            length = str(len(body))
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        if body:
            self.wfile.write(body)
        elif has_body:
            while chunk := response.read(_CHUNK):
                self.wfile.write(chunk)
        if response.will_close:
            self._upstreams.pop(host).close()
        else:
            response.read()  # drain (empty) so the connection can be reused


class _ConnectHandler(_Handler):
    """Open ``CONNECT host:443`` tunnels to allowed hosts only."""

    # Unbuffered: bytes the client sends right after the CONNECT head must reach the tunnel, not a buffer.
    rbufsize = 0

    def do_CONNECT(self) -> None:
        host, _, port = self.path.rpartition(":")
        host = host.strip("[]").lower()
        if host not in self.server.connect_hosts or port != "443":
            self.deny(self.path)
            return
        try:
            upstream = socket.create_connection((host, 443), timeout=UPSTREAM_TIMEOUT_S)
        except OSError as exc:
            LOG.warning("proxy: CONNECT %s failed: %s", self.path, exc)
            self.send_error(502, f"dlsetup test proxy: upstream failed: {exc}")
            return
        self.server.count("connect")
        self.close_connection = True
        with upstream:
            self.send_response_only(200, "Connection established")
            self.end_headers()
            self.server.tunnel(self.connection, upstream)


class FilteringProxy:
    """Listeners for the apt and CONNECT proxies, one accept thread, a bounded pool of connection threads."""

    def __init__(self, apt_hosts: Iterable[str], connect_hosts: Iterable[str]) -> None:
        self.apt_hosts = frozenset(h.lower() for h in apt_hosts)
        self.connect_hosts = frozenset(h.lower() for h in connect_hosts)
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._listeners: dict[tuple[str, int], socket.socket] = {}
        self._active: set[socket.socket] = set()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._pool = ThreadPoolExecutor(max_workers=MAX_CONNECTIONS, thread_name_prefix="dlsetup-proxy")
        self._stopping = threading.Event()
        self.counters: dict[str, int] = {"apt": 0, "connect": 0, "denied": 0, "rejected": 0}
        self._thread = threading.Thread(target=self._accept_loop, name="dlsetup-proxy-accept", daemon=True)
        self._thread.start()

    # -- listeners -------------------------------------------------------------------------------------------
    def listen(self, address: str, port: int, kind: str) -> None:
        """Start accepting ``kind`` (:data:`APT` or :data:`CONNECT`) connections on ``address:port``."""
        if kind not in (APT, CONNECT):
            raise ValueError(f"unknown proxy kind {kind!r}")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(32)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        with self._lock:
            self._listeners[(address, port)] = sock
            self._selector.register(sock, selectors.EVENT_READ, kind)

    def unlisten(self, address: str) -> None:
        """Close every listener bound to ``address`` (a host going away)."""
        with self._lock:
            for key in [k for k in self._listeners if k[0] == address]:
                sock = self._listeners.pop(key)
                self._selector.unregister(sock)
                sock.close()

    # -- serving ---------------------------------------------------------------------------------------------
    def count(self, what: str) -> None:
        with self._lock:
            self.counters[what] += 1

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                events = self._selector.select(timeout=0.5)
            except OSError:  # a listener closed under us
                continue
            for key, _ in events:
                try:
                    conn, peer = key.fileobj.accept()  # type: ignore[union-attr]
                except OSError:
                    continue
                if not self._slots.acquire(blocking=False):
                    self.count("rejected")
                    LOG.warning("proxy: too many connections, rejecting %s", peer[0])
                    conn.close()
                    continue
                try:
                    self._pool.submit(self._serve, conn, peer, key.data)
                except RuntimeError:  # pool shut down
                    self._slots.release()
                    conn.close()

    def _serve(self, conn: socket.socket, peer: tuple[str, int], kind: str) -> None:
        with self._lock:
            self._active.add(conn)
        try:
            conn.setblocking(True)
            conn.settimeout(CLIENT_IDLE_TIMEOUT_S)
            handler = _AptHandler if kind == APT else _ConnectHandler
            handler(conn, peer, self)  # type: ignore[arg-type]
        except Exception as exc:
            if not self._stopping.is_set():
                LOG.debug("proxy: connection from %s ended: %s", peer[0], exc)
        finally:
            with self._lock:
                self._active.discard(conn)
            conn.close()
            self._slots.release()

    def tunnel(self, client: socket.socket, upstream: socket.socket) -> None:
        """Copy bytes both ways until one side closes, the tunnel idles out, or the proxy stops."""
        peers = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as sel:
            sel.register(client, selectors.EVENT_READ)
            sel.register(upstream, selectors.EVENT_READ)
            last = time.monotonic()
            while not self._stopping.is_set():
                ready = sel.select(timeout=0.5)
                if not ready:
                    if time.monotonic() - last > TUNNEL_IDLE_TIMEOUT_S:
                        return
                    continue
                last = time.monotonic()
                for key, _ in ready:
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = src.recv(_CHUNK)
                        if not data:
                            return
                        peers[src].sendall(data)
                    except OSError:
                        return

    def stop(self) -> None:
        """Close listeners and live connections, join every thread. Safe to call twice."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        with self._lock:
            for sock in self._listeners.values():
                self._selector.unregister(sock)
                sock.close()
            self._listeners.clear()
            for conn in self._active:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self._thread.join()
        self._pool.shutdown(wait=True)
        self._selector.close()
        LOG.info("proxy: stopped (%s)", ", ".join(f"{k} {v}" for k, v in self.counters.items()))
