"""A SIMULATOR of the AMQP 1.0 endpoint of Azure Event Hubs and Azure Service Bus.

Neither service has an emulator that runs here (both emulators are MCR container images), so
the tests start this simulator on 127.0.0.1 (a random port) and point the REAL SDK clients at
it: ``EventHubProducerClient`` and ``ServiceBusClient``/``ServiceBusSender``, whose pure-Python
``_pyamqp`` transport talks plain AMQP (no TLS) when the connection string carries
``UseDevelopmentEmulator=true`` and then honours the port in ``Endpoint=sb://host:port``. That
is the flag an operator uses for Microsoft's real emulators too.

It is a SIMULATOR, not a broker: one thread per connection answers the frames a sending client
sends, reusing the SDK's own codec (``azure.eventhub._pyamqp``) for the server side. It does
the protocol headers (SASL, then AMQP), sasl-mechanisms/init/outcome, open, begin, attach,
flow, transfer (single messages and batches, split over several frames or not), disposition,
detach, end and close; the ``$cbs`` node (put-token, checking the SAS token's signature
against the simulator's key) and Event Hubs' ``$management`` node (the hub's partition ids).
Messages the entity links accept are decoded and kept in ``received`` for tests to read.

Faults a test can inject:

- ``refuse_tokens``: the next N put-token requests are answered 401;
- ``drop_after``: after that many accepted transfers every further transfer drops the
  connection before it is settled (the namespace became unreachable), until cleared;
- ``reject_after``: after that many accepted transfers every further transfer is settled
  ``rejected`` (with ``reject_condition``), until cleared;
- ``reject_next``: the next N transfers are rejected (the SDKs retry a transient rejection).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import socketserver
import struct
import threading
import time
import traceback
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from azure.eventhub._pyamqp import performatives as perf
from azure.eventhub._pyamqp._decode import decode_frame, decode_payload
from azure.eventhub._pyamqp._encode import encode_frame, encode_payload
from azure.eventhub._pyamqp.constants import HEADER_FRAME, SASL_HEADER_FRAME
from azure.eventhub._pyamqp.endpoints import Source, Target
from azure.eventhub._pyamqp.error import AMQPError
from azure.eventhub._pyamqp.message import Message, Properties
from azure.eventhub._pyamqp.outcomes import Accepted, Rejected

from tests.sim import serving

KEY_NAME = "RootManageSharedAccessKey"
# A simulator's key, not a secret: the tests' connection strings sign SAS tokens with it.
KEY = "c2ltdWxhdG9yLWtleS1ub3QtYS1zZWNyZXQ="
BATCH_FORMAT = 0x80013700  # a batch: each data section is one encoded message
_AMQP_FRAME, _SASL_FRAME = b"\x00", b"\x01"
_OPEN, _BEGIN, _ATTACH, _FLOW, _TRANSFER, _DISPOSITION, _DETACH, _END, _CLOSE = range(0x10, 0x19)
_SASL_INIT = 0x41
_PARTITION_KEY = b"x-opt-partition-key"


@dataclass(frozen=True)
class Received:
    """One message an entity link accepted, decoded."""

    entity: str  # the link's target path: "hub", "hub/Partitions/0", "topic"
    message: Message

    @property
    def body(self) -> bytes:
        return b"".join(cast(list[bytes], self.message.data or []))

    @property
    def application_properties(self) -> dict[str, Any]:
        return {_text(k): _text(v) for k, v in (self.message.application_properties or {}).items()}

    @property
    def annotations(self) -> dict[str, Any]:
        return {_text(k): _text(v) for k, v in (self.message.message_annotations or {}).items()}

    @property
    def partition_key(self) -> str | None:
        return self.annotations.get(_PARTITION_KEY.decode())

    def prop(self, name: str) -> Any:
        """Return one AMQP property (message_id, subject, content_type, ...) as text."""
        props = self.message.properties
        return _text(getattr(props, name)) if props is not None else None


@dataclass
class AmqpSimulator:
    """The simulator's state; connection threads read and change it under ``lock``."""

    partitions: tuple[str, ...] = ("0", "1")
    max_message_size: int = 256 * 1024  # what attach advertises: the SDKs size batches by it
    max_frame_size: int = 16 * 1024  # small, so big batches arrive over several frames
    refuse_tokens: int = 0
    drop_after: int | None = None
    reject_after: int | None = None
    reject_next: int = 0
    reject_condition: str = "com.microsoft:server-busy"
    received: list[Received] = field(default_factory=list)
    transfers: list[list[Received]] = field(default_factory=list)  # one entry per delivery
    tokens: list[str] = field(default_factory=list)  # audiences whose token was accepted
    management: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    errors: list[str] = field(default_factory=list)  # the simulator's own failures
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    _server: socketserver.ThreadingTCPServer | None = None
    _accepted: int = 0

    def start(self) -> AmqpSimulator:
        sim = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with sim.lock:
                    sim.connections += 1
                _Connection(sim, self.request).serve()

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.port = serving.serve_in_background(self._server, "amqp-sim")
        return self

    def stop(self) -> None:
        serving.stop(self._server)

    def reset(self) -> None:
        with self.lock:
            self.refuse_tokens = self.reject_next = self._accepted = 0
            self.drop_after = self.reject_after = None
            self.max_message_size = 256 * 1024
            self.reject_condition = "com.microsoft:server-busy"
            self.errors.clear()
            self.received.clear()
            self.transfers.clear()
            self.tokens.clear()
            self.management.clear()

    def connection_string(self, entity: str | None = None, key: str = KEY) -> str:
        """Return what an operator would put in the secret: plain AMQP to this simulator."""
        text = (
            f"Endpoint=sb://127.0.0.1:{self.port};SharedAccessKeyName={KEY_NAME};"
            f"SharedAccessKey={key};UseDevelopmentEmulator=true"
        )
        return text + (f";EntityPath={entity}" if entity else "")

    # --- decisions the connection threads ask for ------------------------------------------

    def _check_token(self, audience: str, token: str) -> tuple[int, str]:
        with self.lock:
            if self.refuse_tokens > 0:
                self.refuse_tokens -= 1
                return 401, "simulated: the token was refused"
        if not _sas_valid(token, KEY_NAME, KEY):
            return 401, "InvalidSignature: the token's signature does not match the key"
        with self.lock:
            self.tokens.append(audience)
        return 202, "Accepted"

    def _verdict(self) -> str:
        """Return what to do with a complete entity transfer: accept, reject or drop."""
        with self.lock:
            if self.drop_after is not None and self._accepted >= self.drop_after:
                return "drop"
            if self.reject_after is not None and self._accepted >= self.reject_after:
                return "reject"
            if self.reject_next > 0:
                self.reject_next -= 1
                return "reject"
            self._accepted += 1
            return "accept"

    def _keep(self, entity: str, messages: list[Message]) -> None:
        kept = [Received(entity, message) for message in messages]
        with self.lock:
            self.received.extend(kept)
            self.transfers.append(kept)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True  # a client that never closes must not keep the test process alive
    allow_reuse_address = True


class _Dropped(Exception):
    """The simulator drops this connection (a fault, or the client went away)."""


@dataclass
class _Link:
    name: Any
    handle: int
    role: bool  # the CLIENT's role: False = it sends to us, True = it receives from us
    address: str
    delivery_count: int = 0
    partial: bytearray = field(default_factory=bytearray)
    partial_id: int | None = None
    partial_format: int = 0
    partial_settled: bool = False


@dataclass
class _Session:
    channel: int
    links: dict[int, _Link] = field(default_factory=dict)
    next_delivery_id: int = 0


class _Connection:
    """One client connection: frames in, answers out, in the client's order."""

    def __init__(self, sim: AmqpSimulator, sock: socket.socket) -> None:
        self.sim, self.sock = sim, sock
        self.sessions: dict[int, _Session] = {}

    def serve(self) -> None:
        try:
            self._handshake()
            while True:
                frame = self._read_frame()
                if frame is None:
                    continue  # an empty (heartbeat) frame
                channel, code, fields = frame
                if self._on_frame(channel, code, fields):
                    return
        except (_Dropped, OSError):
            pass
        except Exception as exc:  # a simulator bug: keep it for the test to see
            with self.sim.lock:
                self.sim.errors.append("".join(traceback.format_exception(exc)))
        finally:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()

    # --- wire ----------------------------------------------------------------------------

    def _read(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise _Dropped("the client closed the connection")
            data += chunk
        return bytes(data)

    def _read_frame(self) -> tuple[int, int, list[Any]] | None:
        head = self._read(8)
        size, doff, _ = struct.unpack(">IBB", head[:6])
        channel = struct.unpack(">H", head[6:8])[0]
        rest = self._read(size - 8)
        body = memoryview(rest)[doff * 4 - 8 :]
        if not body:
            return None
        code, fields = decode_frame(body)
        return channel, code, fields

    def _send(self, channel: int, frame: Any, frame_type: bytes = _AMQP_FRAME) -> None:
        header, body = encode_frame(frame, frame_type=frame_type)
        data = header if body is None else header + struct.pack(">H", channel) + body
        self.sock.sendall(data)

    def _handshake(self) -> None:
        header = self._read(8)
        if header == SASL_HEADER_FRAME:
            self.sock.sendall(SASL_HEADER_FRAME)
            # The SDKs authenticate with CBS put-token after an ANONYMOUS SASL exchange.
            self._send(0, perf.SASLMechanism([b"ANONYMOUS", b"PLAIN", b"MSSBCBS"]), _SASL_FRAME)
            frame = self._read_frame()
            if frame is None or frame[1] != _SASL_INIT:
                raise _Dropped("expected sasl-init")
            self._send(0, perf.SASLOutcome(code=0, additional_data=None), _SASL_FRAME)
            header = self._read(8)
        if header != HEADER_FRAME:
            self.sock.sendall(HEADER_FRAME)  # the spec: answer with the version we speak
            raise _Dropped(f"unsupported protocol header {header!r}")
        self.sock.sendall(HEADER_FRAME)

    # --- performatives -------------------------------------------------------------------

    def _on_frame(self, channel: int, code: int, f: list[Any]) -> bool:
        """Answer one frame; return True when the connection is over."""
        if code == _OPEN:
            self._send(
                0,
                perf.OpenFrame(
                    container_id="amqp-simulator",
                    hostname="127.0.0.1",
                    max_frame_size=self.sim.max_frame_size,
                    channel_max=255,
                    idle_timeout=None,
                    outgoing_locales=None,
                    incoming_locales=None,
                    offered_capabilities=None,
                    desired_capabilities=None,
                    properties=None,
                ),
            )
        elif code == _BEGIN:
            self.sessions[channel] = _Session(channel)
            self._send(
                channel,
                perf.BeginFrame(
                    remote_channel=channel,
                    next_outgoing_id=0,
                    incoming_window=65536,
                    outgoing_window=65536,
                    handle_max=255,
                    offered_capabilities=None,
                    desired_capabilities=None,
                    properties=None,
                ),
            )
        elif code == _CLOSE:
            self._send(0, perf.CloseFrame(error=None))
            return True
        elif channel not in self.sessions:
            pass  # a late frame of a session the client already ended (after an error)
        elif code == _ATTACH:
            self._on_attach(self.sessions[channel], f)
        elif code == _FLOW:
            pass  # the client's credit for our reply links: the simulator never runs out
        elif code == _TRANSFER:
            self._on_transfer(self.sessions[channel], f)
        elif code == _DISPOSITION:
            pass  # the client settling our (pre-settled) replies
        elif code == _DETACH:
            self.sessions[channel].links.pop(f[0], None)
            self._send(channel, perf.DetachFrame(handle=f[0], closed=True, error=None))
        elif code == _END:
            self.sessions.pop(channel, None)
            self._send(channel, perf.EndFrame(error=None))
        return False

    def _on_attach(self, session: _Session, f: list[Any]) -> None:
        name, handle, role, snd_settle, rcv_settle, source, target = f[:7]
        client_sends = role is False
        endpoint = target if client_sends else source
        address = _address(endpoint)
        link = _Link(name, handle, bool(role), address, delivery_count=f[9] or 0)
        session.links[handle] = link
        self._send(
            session.channel,
            perf.AttachFrame(
                name=name,
                handle=handle,  # our handles mirror the client's: unique in our direction too
                role=client_sends,  # we are the other end
                send_settle_mode=snd_settle,
                rcv_settle_mode=rcv_settle,
                # Unset fields take the namedtuples' defaults (the SDK's typing does not say so).
                source=cast(Any, Source)(address=_address(source)),
                target=cast(Any, Target)(address=_address(target)),
                unsettled=None,
                incomplete_unsettled=None,
                initial_delivery_count=None if client_sends else 0,
                max_message_size=self.sim.max_message_size,
                offered_capabilities=None,
                desired_capabilities=None,
                # Service Bus sizes batches by this vendor property (Event Hubs by the above).
                properties={b"com.microsoft:max-message-batch-size": self.sim.max_message_size},
            ),
        )
        if client_sends:
            self._send(
                session.channel,
                perf.FlowFrame(
                    next_incoming_id=0,
                    incoming_window=65536,
                    next_outgoing_id=0,
                    outgoing_window=65536,
                    handle=handle,
                    delivery_count=link.delivery_count,
                    link_credit=1000,
                    available=None,
                    drain=None,
                    echo=None,
                    properties=None,
                ),
            )

    def _on_transfer(self, session: _Session, f: list[Any]) -> None:
        handle, delivery_id, _tag, message_format, settled, more = f[:6]
        payload = f[-1]
        link = session.links[handle]
        if link.partial_id is None:
            link.partial_id = delivery_id
            link.partial_format = message_format or 0
            link.partial_settled = bool(settled)
        link.partial += bytes(payload)
        if more:
            return  # the rest of this delivery follows in the next frames
        data, delivery = bytes(link.partial), link.partial_id
        fmt, presettled = link.partial_format, link.partial_settled
        link.partial, link.partial_id = bytearray(), None
        link.delivery_count += 1
        message = decode_payload(memoryview(data))
        if link.address.endswith("$cbs"):
            self._settle(session, delivery, presettled, Accepted())
            self._reply(session, "$cbs", message, *self._put_token(message))
        elif link.address.endswith("$management"):
            self._settle(session, delivery, presettled, Accepted())
            self._reply(session, "$management", message, *self._management(message))
        else:
            verdict = self.sim._verdict()
            if verdict == "drop":
                raise _Dropped("simulated: the namespace became unreachable")
            if verdict == "reject":
                error = AMQPError(
                    condition=self.sim.reject_condition.encode(),
                    description=b"simulated: the transfer was rejected",
                    info=None,
                )
                self._settle(session, delivery, presettled, Rejected(error=error))
                return
            inner = message.data or []
            messages = (
                [decode_payload(memoryview(cast(bytes, section))) for section in inner]
                if fmt == BATCH_FORMAT
                else [message]
            )
            self.sim._keep(_entity(link.address), messages)
            self._settle(session, delivery, presettled, Accepted())

    def _settle(self, session: _Session, delivery: int | None, settled: bool, state: Any) -> None:
        if settled or delivery is None:
            return
        self._send(
            session.channel,
            perf.DispositionFrame(
                role=True, first=delivery, last=delivery, settled=True, state=state, batchable=None
            ),
        )

    def _put_token(self, request: Message) -> tuple[int, str, Any]:
        props = {_text(k): v for k, v in (request.application_properties or {}).items()}
        audience, token = _text(props.get("name")), _text(request.value)
        status, description = self.sim._check_token(str(audience), str(token))
        return status, description, None

    def _management(self, request: Message) -> tuple[int, str, Any]:
        props = {_text(k): _text(v) for k, v in (request.application_properties or {}).items()}
        props.pop("security_token", None)
        with self.sim.lock:
            self.sim.management.append(props)
        if props.get("operation") == "READ" and props.get("type") == "com.microsoft:eventhub":
            return (
                200,
                "OK",
                {
                    b"name": str(props.get("name")),
                    b"type": "com.microsoft:eventhub",
                    b"created_at": datetime.now(UTC),
                    b"partition_count": len(self.sim.partitions),
                    b"partition_ids": list(self.sim.partitions),
                },
            )
        return 404, f"simulated: no management operation {props.get('operation')!r}", None

    def _reply(
        self, session: _Session, node: str, request: Message, status: int, text: str, body: Any
    ) -> None:
        """Send the response of a request/response node on the client's receiving link."""
        reply_link = next(
            (ln for ln in session.links.values() if ln.role and ln.address.endswith(node)), None
        )
        if reply_link is None:
            raise _Dropped(f"no reply link for {node}")
        request_id = cast(Any, request.properties.message_id if request.properties else None)
        response = Message(
            properties=Properties(message_id=str(uuid.uuid4()), correlation_id=request_id),
            application_properties={
                "status-code": status,
                "status-description": text,
                "statusCode": status,
                "statusDescription": text,
            },
            value=body,
        )
        payload = encode_payload(bytearray(), response)
        delivery, session.next_delivery_id = session.next_delivery_id, session.next_delivery_id + 1
        self._send(
            session.channel,
            perf.TransferFrame(
                handle=reply_link.handle,
                delivery_id=delivery,
                delivery_tag=struct.pack(">I", delivery),
                message_format=0,
                settled=True,
                more=False,
                payload=bytes(payload),
            ),
        )


def _text(value: Any) -> Any:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _address(endpoint: Any) -> str:
    """Return the address of a decoded source or target (a described list), or ''."""
    if isinstance(endpoint, list) and endpoint:
        return str(_text(endpoint[0]) or "")
    return ""


def _entity(address: str) -> str:
    """Return the entity path of a link address: ``amqps://host/hub`` -> ``hub``."""
    path = urllib.parse.urlparse(address).path if "://" in address else address
    return path.strip("/")


def _sas_valid(token: str, key_name: str, key: str) -> bool:
    """Check a ``SharedAccessSignature sr=..&sig=..&se=..&skn=..`` token as the service does."""
    if not token.startswith("SharedAccessSignature "):
        return False
    fields = dict(urllib.parse.parse_qsl(token.split(" ", 1)[1]))
    resource, expiry = fields.get("sr", ""), fields.get("se", "0")
    if fields.get("skn") != key_name or not expiry.isdigit() or int(expiry) < time.time():
        return False
    signed = urllib.parse.quote_plus(resource) + "\n" + expiry
    digest = hmac.new(key.encode(), signed.encode(), hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(digest).decode(), fields.get("sig", ""))
