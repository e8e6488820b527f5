"""A fake APNs provider API: HTTP/2 over TLS on loopback (the `h2` library on asyncio, in its own thread),
checking provider JWTs like Apple does and recording every request; failures are scriptable."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import itertools
import json
import re
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.fakes.http import Reply

DEVICE_PATH = re.compile(r"^/3/device/(?P<token>[^/]+)$")
HEX_TOKEN = re.compile(r"^[0-9a-fA-F]{64}$")
MAX_PAYLOAD_BYTES = 4096
TOKEN_MAX_AGE_SECONDS = 3600.0


def apns_error(
    status: int, reason: str, *, timestamp: int | None = None, headers: dict[str, str] | None = None
) -> Reply:
    payload: dict[str, Any] = {"reason": reason}
    if timestamp is not None:
        payload["timestamp"] = timestamp
    return Reply.json(status, payload, headers)


def make_auth_key() -> tuple[bytes, bytes]:
    """A fresh APNs-style auth key: the .p8 (PKCS#8 PEM of an EC P-256 key) and its public key PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def make_tls_files(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key: (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "herald fake apns")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "apns-cert.pem", directory / "apns-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@dataclass(frozen=True)
class ApnsRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased, pseudo-headers (:path…) left out
    body: bytes
    alpn: str | None  # the TLS-negotiated protocol: "h2" for every request this server answers
    connection: int  # which connection carried it (HTTP/2 multiplexes many streams on one)

    @property
    def token(self) -> str:
        match = DEVICE_PATH.match(self.path)
        return match["token"] if match else ""

    @property
    def provider_token(self) -> str:
        return self.headers.get("authorization", "").removeprefix("bearer ")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class _Hang:
    seconds: float


@dataclass
class _Stream:
    headers: dict[str, str]
    body: bytearray = field(default_factory=bytearray)


class FakeApns:
    """Answers `POST /3/device/<token>` like APNs: 200 with the apns-id, or Apple's error bodies.

    Checks the provider JWT (ES256 with `public_key`, `kid`, `iss`, `iat` under an hour old by `clock`),
    the topic and the token's form. `fail_next` / `hang_next` override the next requests whatever they
    are; `refuse(token, reply)` makes one token always fail; `delay` slows every answer."""

    def __init__(
        self,
        cert_file: Path,
        key_file: Path,
        *,
        public_key: bytes,
        key_id: str,
        team_id: str,
        topic: str,
    ) -> None:
        self.public_key = public_key
        self.key_id = key_id
        self.team_id = team_id
        self.topic = topic
        self.clock: Callable[[], float] = time.time
        self.delay = 0.0
        self.token_max_age = TOKEN_MAX_AGE_SECONDS  # lower it to have valid-looking tokens refused as expired
        self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tls.load_cert_chain(cert_file, key_file)
        self._tls.set_alpn_protocols(["h2"])
        self._lock = threading.Lock()
        self._requests: list[ApnsRequest] = []
        self._script: deque[Reply | _Hang] = deque()
        self._refusals: dict[str, Reply] = {}
        self._in_flight = 0
        self.max_in_flight = 0
        self._connections = itertools.count(1)
        self._port = 0
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="FakeApns", daemon=True)

    # --- for tests --------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._port}"

    @property
    def requests(self) -> list[ApnsRequest]:
        with self._lock:
            return list(self._requests)

    def fail_next(self, reply: Reply, times: int = 1) -> None:
        with self._lock:
            self._script.extend([reply] * times)

    def hang_next(self, times: int = 1, seconds: float = 10.0) -> None:
        """Accept the next requests but answer nothing for `seconds` (or until the server stops)."""
        with self._lock:
            self._script.extend([_Hang(seconds)] * times)

    def refuse(self, token: str, reply: Reply) -> None:
        with self._lock:
            self._refusals[token] = reply

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._refusals.clear()
            self.max_in_flight = 0
        self.clock = time.time
        self.delay = 0.0
        self.token_max_age = TOKEN_MAX_AGE_SECONDS

    def start(self) -> Self:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the fake APNs server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- the server -------------------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        connections: set[asyncio.Task[None]] = set()

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            connections.add(task)
            try:
                await self._serve(reader, writer)
            finally:
                connections.discard(task)

        server = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=self._tls)
        self._port = server.sockets[0].getsockname()[1]
        self._started.set()
        await self._stopping.wait()
        server.close()
        for task in list(connections):
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ssl_object = writer.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        number = next(self._connections)
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, _Stream] = {}
        answering: dict[int, asyncio.Task[None]] = {}
        try:
            while not reader.at_eof():
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    events = conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    break
                for event in events:
                    if isinstance(event, h2.events.RequestReceived) and event.stream_id is not None:
                        streams[event.stream_id] = _Stream({str(k): str(v) for k, v in event.headers or []})
                    elif isinstance(event, h2.events.DataReceived) and event.stream_id is not None:
                        streams[event.stream_id].body += event.data or b""
                        conn.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id is not None:
                        stream = streams.pop(event.stream_id)
                        request = ApnsRequest(
                            method=stream.headers.get(":method", ""),
                            path=stream.headers.get(":path", ""),
                            headers={
                                k.lower(): v for k, v in stream.headers.items() if not k.startswith(":")
                            },
                            body=bytes(stream.body),
                            alpn=alpn,
                            connection=number,
                        )
                        answering[event.stream_id] = asyncio.create_task(
                            self._answer(conn, writer, event.stream_id, request)
                        )
                    elif isinstance(event, h2.events.StreamReset) and event.stream_id is not None:
                        task = answering.pop(event.stream_id, None)
                        if task is not None:
                            task.cancel()
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        return
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            for task in answering.values():
                task.cancel()
            await asyncio.gather(*answering.values(), return_exceptions=True)
            writer.close()

    async def _answer(
        self,
        conn: h2.connection.H2Connection,
        writer: asyncio.StreamWriter,
        stream_id: int,
        request: ApnsRequest,
    ) -> None:
        with self._lock:
            self._requests.append(request)
            scripted = self._script.popleft() if self._script else None
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if isinstance(scripted, _Hang):
                await asyncio.sleep(scripted.seconds)
                return
            reply = scripted if scripted is not None else self._reply(request)
        finally:
            with self._lock:
                self._in_flight -= 1
        headers = [(":status", str(reply.status)), *((k.lower(), v) for k, v in reply.headers.items())]
        if reply.status == 200:
            headers.append(("apns-id", request.headers.get("apns-id") or str(uuid.uuid4())))
        headers.append(("content-length", str(len(reply.body))))
        try:
            conn.send_headers(stream_id, headers, end_stream=not reply.body)
            if reply.body:
                conn.send_data(stream_id, reply.body, end_stream=True)
        except h2.exceptions.StreamClosedError:
            return  # the client gave up on this stream meanwhile
        if not writer.is_closing():
            writer.write(conn.data_to_send())

    def _reply(self, request: ApnsRequest) -> Reply:
        if request.method != "POST" or not DEVICE_PATH.match(request.path):
            return apns_error(404, "BadPath")
        refusal = self._check_provider_token(request.provider_token)
        if refusal is not None:
            return refusal
        if "apns-topic" not in request.headers:
            return apns_error(400, "MissingTopic")
        if request.headers["apns-topic"] != self.topic:
            return apns_error(400, "DeviceTokenNotForTopic")
        if not HEX_TOKEN.match(request.token):
            return apns_error(400, "BadDeviceToken")
        if len(request.body) > MAX_PAYLOAD_BYTES:
            return apns_error(413, "PayloadTooLarge")
        with self._lock:
            refused = self._refusals.get(request.token)
        if refused is not None:
            return refused
        try:
            payload = request.json()
        except ValueError:
            return apns_error(400, "PayloadEmpty")
        if not isinstance(payload, dict) or "aps" not in payload:
            return apns_error(400, "PayloadEmpty")
        return Reply(200)

    def _check_provider_token(self, token: str) -> Reply | None:
        if not token:
            return apns_error(403, "MissingProviderToken")
        try:
            header = jwt.get_unverified_header(token)
            # iat is judged by this server's `clock` below, which tests may move forward.
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["ES256"],
                options={"require": ["iss", "iat"], "verify_iat": False},
            )
        except jwt.PyJWTError:
            return apns_error(403, "InvalidProviderToken")
        if header.get("kid") != self.key_id or claims["iss"] != self.team_id:
            return apns_error(403, "InvalidProviderToken")
        if self.clock() - float(claims["iat"]) > self.token_max_age:
            return apns_error(403, "ExpiredProviderToken")
        return None
