"""One MQTT connection of the test device, with AWS's IoT device SDK (awscrt), dialed through
the tunnel as the chosen runtime's client would dial it: BaseSession (the tunnel, the failure
reports and the waiting, shared with lite_session.LiteSession), Session (MQTT 3.1.1 with the
SDK's v1 connection: the Java plugin's client, and attacker.py's)."""

from __future__ import annotations

import concurrent.futures
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from testdevice.settings import DeviceFailure, Settings
from testdevice.tunnel import Tunnel, tls_probe


class BaseSession:
    """What every connection of the device shares: the CONNECT tunnel it dials through, how a
    failed connect is explained, how a drop is noticed and reported, and waiting on a future."""

    alpn = False

    def __init__(self, settings: Settings, cert: Path, key: Path, client_id: str, port: int, args):
        self.args = args
        self.settings = settings
        self.cert, self.key, self.client_id, self.port = cert, key, client_id, port
        self.tunnel = Tunnel(args.connect_to, args.timeout)
        self.interrupted = threading.Event()
        self.interrupt_error: Optional[str] = None
        self.connected = False

    @property
    def dialed(self) -> str:
        alpn = " (ALPN x-amzn-mqtt-ca)" if self.alpn else ""
        return f"{self.settings.endpoint}:{self.port}{alpn} via {self.args.connect_to[0]}:{self.args.connect_to[1]}"

    def _connect_failure(self, what: str) -> str:
        parts = [f"{what} (client id {self.client_id!r}, {self.dialed})"]
        parts += self.tunnel.errors
        if not self.tunnel.errors:
            if self.tunnel.server_closed.is_set():
                parts.append("the server closed the connection")
            parts.append(tls_probe(self.args.connect_to, self.settings.endpoint, self.args.root_ca, self.cert, self.key,
                                   self.args.timeout))
        return "; ".join(parts)

    def dropped(self) -> bool:
        return self.interrupted.is_set() or self.tunnel.server_closed.is_set()

    def dropped_soon(self, within: float = 0.5) -> bool:
        """Whether the connection is (or within `within` seconds turns out) dropped: a
        request the SDK fails because the server closed the connection may fail before the
        SDK's interruption callback or the tunnel sees the close."""
        deadline = time.monotonic() + within
        while not self.dropped():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _dropped_failure(self, stage: str, what: str, cause: Optional[Exception] = None) -> DeviceFailure:
        detail = self.interrupt_error or (str(cause) if cause else "")
        return DeviceFailure(
            stage,
            f"the server closed the connection while waiting for the {what}"
            + (f" ({detail})" if detail else "")
            + ": AWS IoT drops a client whose policy denies the action",
        )

    def wait(self, future: concurrent.futures.Future, stage: str, what: str,
             check: Optional[Callable[[], Optional[str]]] = None) -> Any:
        """Wait for a future, failing at `stage` on timeout or when the server drops us, or
        when `check` (polled) returns a reason the future can no longer settle."""
        deadline = time.monotonic() + self.args.timeout
        grace_until = None
        while True:
            try:
                return future.result(0.05)
            except concurrent.futures.TimeoutError:
                pass
            except DeviceFailure:
                raise
            except Exception as e:
                if self.dropped_soon():
                    raise self._dropped_failure(stage, what, e)
                raise DeviceFailure(stage, f"{what} failed: {e}")
            now = time.monotonic()
            if self.dropped():
                # Give an answer that raced the disconnect a moment to land.
                grace_until = grace_until or now + 0.2
                if now > grace_until:
                    raise self._dropped_failure(stage, what)
            elif check is not None:
                reason = check()
                if reason:
                    grace_until = grace_until or now + 0.2
                    if now > grace_until:
                        raise DeviceFailure(stage, reason)
            if now > deadline:
                raise DeviceFailure(stage, f"no {what} within {self.args.timeout:g} s")


class Session(BaseSession):
    """One MQTT 3.1.1 connection of the device (claim or device certificate), with the SDK's
    v1 client (awscrt.mqtt.Connection): the Java plugin's (MqttConnectionHelper.java L58:
    clean session; the SDK's v1 IotIdentityClient on it), and attacker.py's."""

    def __init__(self, settings: Settings, cert: Path, key: Path, client_id: str, port: int, args):
        import awscrt.io
        from awscrt import http, mqtt

        super().__init__(settings, cert, key, client_id, port, args)

        def on_interrupted(connection, error, **kwargs):
            self.interrupt_error = str(error)
            self.interrupted.set()

        def on_closed(connection, callback_data=None, **kwargs):
            self.interrupted.set()

        # As the runtime's client sets up TLS: Java's AwsIotMqttConnectionBuilder (SDK 1.31.0)
        # always offers ALPN x-amzn-mqtt-ca where ALPN is available; lite's iotcored never does.
        tls = awscrt.io.TlsContextOptions.create_client_with_mtls_from_path(str(cert), str(key))
        tls.override_default_trust_store_from_path(None, args.root_ca)
        self.alpn = settings.nucleus == "java" and awscrt.io.is_alpn_available()
        if self.alpn:
            tls.alpn_list = ["x-amzn-mqtt-ca"]
        sockets = awscrt.io.SocketOptions()
        sockets.connect_timeout_ms = int(args.timeout * 1000)
        self.connection: mqtt.Connection = mqtt.Connection(
            client=mqtt.Client(None, awscrt.io.ClientTlsContext(tls)),
            host_name=settings.endpoint,  # also the TLS server name (SNI and certificate check)
            port=port,
            client_id=client_id,
            clean_session=True,
            keep_alive_secs=1200,
            protocol_operation_timeout_ms=int(args.timeout * 1000),
            reconnect_min_timeout_secs=60,
            reconnect_max_timeout_secs=120,
            on_connection_interrupted=on_interrupted,
            on_connection_closed=on_closed,
            socket_options=sockets,
            proxy_options=http.HttpProxyOptions(
                "127.0.0.1", self.tunnel.port, connection_type=http.HttpProxyConnectionType.Tunneling
            ),
            disable_metrics=settings.nucleus != "java",  # the Java SDK sends its metrics username
        )

    def connect(self, stage: str) -> None:
        future = self.connection.connect()
        try:
            future.result(self.args.timeout)
        except concurrent.futures.TimeoutError:
            raise DeviceFailure(stage, self._connect_failure(f"no CONNACK within {self.args.timeout:g} s"))
        except Exception as e:  # awscrt raises AwsCrtError or Exception(ConnectReturnCode)
            raise DeviceFailure(stage, self._connect_failure(f"connect failed: {e}"))
        self.connected = True

    def subscribe(self, subscribe_call: Callable, stage: str, topic_hint: str) -> None:
        result = subscribe_call()
        future = result[0] if isinstance(result, tuple) else result
        granted = self.wait(future, stage, f"SUBACK for {topic_hint}")
        qos = granted.get("qos") if isinstance(granted, dict) else granted
        if qos is None or getattr(qos, "value", qos) == 0x80:
            raise DeviceFailure(stage, f"subscription to {topic_hint} refused by the server")

    def disconnect(self, stage: Optional[str]) -> None:
        """Disconnect; `stage` None is cleanup after a failure (short wait, errors ignored)."""
        try:
            if self.connected:
                self.connected = False
                future = self.connection.disconnect()
                try:
                    future.result(self.args.timeout if stage else min(self.args.timeout, 1.0))
                except Exception as e:
                    if stage:
                        raise DeviceFailure(stage, f"disconnect failed: {e or type(e).__name__}")
        finally:
            self.tunnel.close()
