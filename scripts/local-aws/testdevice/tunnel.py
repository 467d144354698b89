"""The network: a local CONNECT tunnel, so TLS names the endpoint while TCP goes to --connect-to
(awscrt's MQTT client has no separate TLS server name; see ../device.py), and a plain TLS
probe that says why a connect failed."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

class Tunnel:
    """An HTTP CONNECT proxy on 127.0.0.1 that forwards every tunnel to one address."""

    def __init__(self, target: tuple[str, int], timeout: float):
        self.target = target
        self.timeout = timeout
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.server_closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _track(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.append(s)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._track(client)
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        client.settimeout(self.timeout)
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    client.close()
                    return
                head += chunk
                if len(head) > 16384:
                    raise OSError("CONNECT request too long")
        except OSError as e:
            self.errors.append(f"tunnel: reading the CONNECT request: {e}")
            client.close()
            return
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        self.requests.append(line)
        if not line.startswith("CONNECT "):
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            client.close()
            return
        try:
            upstream = socket.create_connection(self.target, timeout=self.timeout)
        except OSError as e:
            self.errors.append(f"nothing accepts connections at {self.target[0]}:{self.target[1]} ({e})")
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            client.close()
            return
        self._track(upstream)
        client.settimeout(None)
        upstream.settimeout(None)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        leftover = head.split(b"\r\n\r\n", 1)[1]
        if leftover:
            upstream.sendall(leftover)
        threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_server: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        if from_server and not self._closed:
            self.server_closed.set()
        for s in (dst, src):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._closed = True
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            for s in self._sockets:
                try:
                    s.close()
                except OSError:
                    pass


def tls_probe(target: tuple[str, int], server_name: str, ca: str, cert: Path, key: Path, timeout: float) -> str:
    """A plain TLS handshake like the device's, to explain a failed MQTT connect (awscrt's TLS
    errors arrive only after s2n's 10-30 s blinding delay)."""
    try:
        ctx = ssl.create_default_context(cafile=ca)
        ctx.load_cert_chain(str(cert), str(key))
        with socket.create_connection(target, timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                tls.settimeout(min(timeout, 2.0))
                try:
                    if tls.recv(1) == b"":
                        return f"TLS handshake as {server_name} succeeded, then the server closed the connection (client certificate refused?)"
                except (socket.timeout, TimeoutError):
                    pass
                except (ssl.SSLError, OSError) as e:
                    return f"TLS handshake as {server_name} succeeded, then: {e} (client certificate refused?)"
                return f"a TLS handshake as {server_name} with the same certificate succeeds"
    except ssl.SSLCertVerificationError as e:
        return f"TLS check of the server as {server_name} against --root-ca fails: {e.verify_message}"
    except (ssl.SSLError, OSError) as e:
        return f"TLS handshake as {server_name} fails: {e}"
