"""The node's WebSocket server: websockets' Sans-I/O protocol (``websockets.server``) driven by
one small asyncio protocol per client.

websockets parses and validates everything a client sends — frames, masks, sizes, close codes,
and every HTTP upgrade but the plain one — and writes the bytes control frames and refusals
need; this module moves bytes between the transport and that protocol, and hands whole
messages to one task per connection. The plain upgrade (one complete request in the first read,
nothing unusual in it) is recognised and answered by node/upgrade.py, which takes only what
websockets would take, the same way (property-tested); the protocol is then created open. It replaces websockets' own asyncio server, whose per-connection machinery
(a handshake future and task, the message assembler and its conditions, a send lock, the
keepalive) was ~40 % of a plain relay's CPU per connect (docs/performance.md, "The cost of a
connect: the node's own WebSocket server"). What that server did and this one keeps:

* ``open_timeout``: a client that does not complete its upgrade in time is dropped;
* ``close_timeout``: a client that does not answer our close frame is dropped;
* once ``MAX_QUEUE`` received messages wait for the reader, reading pauses (what one read
  from the socket held is queued still; a flood then fills the kernel's buffers, not the
  node's memory);
* text frames are checked to be UTF-8 (else 1007), messages are reassembled from fragments
  within ``max_size`` (else 1009), pings are answered, pongs matched to our ping;
* writes past ``WRITE_LIMIT`` make :meth:`WsConnection.drain` wait (flow control);
* closing the server (node/wsserver.py) refuses upgrades in progress with 503 and closes open
  connections.
"""

from __future__ import annotations

import asyncio
import http
import logging
import os
from typing import TYPE_CHECKING

from websockets.datastructures import Headers
from websockets.frames import CloseCode as WsCloseCode
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from roomcast.node import upgrade

log = logging.getLogger("roomcast.node.wsconn")
#: websockets' protocol logger, given to each connection's protocol (which would otherwise
#: look it up by name, under the logging module's lock, on every connect).
WS_LOG = logging.getLogger("websockets.server")

#: Received messages that may wait for the reader before reading from the socket pauses.
MAX_QUEUE = 16
#: ... and reading resumes when the reader has taken all but this many.
RESUME_AT = 4
#: Bytes the transport may buffer before :meth:`WsConnection.drain` waits (websockets' own).
WRITE_LIMIT = 32 * 1024
#: Replaces a served request's headers (shared, never modified): see ``forget_request``.
NO_HEADERS = Headers()

_OPEN, _CONNECTING, _CLOSED = State.OPEN, State.CONNECTING, State.CLOSED
_TEXT, _BINARY, _CONT, _PONG = Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PONG

if TYPE_CHECKING:
    from roomcast.node.wsserver import WsServer


class WsConnection(asyncio.Protocol):
    """One client. The node reads messages with :meth:`recv`, writes pre-framed bytes to
    ``transport`` (or frames through ``protocol`` and :meth:`send_data`), and closes with
    :meth:`close`. ``identity``/``refusal`` are the handshake's verdict (node/handshake.py).

    The upgrade's 101 response is held in ``head`` while the handler runs its first step, so
    that it leaves with the handler's first frame in one write (a connect is otherwise one
    system call more, for the client too). Whoever writes to ``transport`` directly must
    write ``head`` first if it is set (:meth:`write` does; ``node/connection.py`` uses it for
    a connection's own frames); :meth:`send_data`, :meth:`close` and :meth:`ping` do too. Whatever the handler does, the 101 is
    written by the loop iteration after the one whose callbacks flush the first step's
    frames (:meth:`_head_deadline`)."""

    __slots__ = ("server", "loop", "protocol", "transport", "request", "response", "identity",
                 "refusal", "head", "_early", "_messages", "_waiter", "_fragments", "_fragments_text",
                 "_reading_paused", "_writing_paused", "_drain_waiters", "_lost", "_timer",
                 "_ping", "__weakref__")

    def __init__(self, server: WsServer) -> None:
        self.server = server
        self.loop = server.loop
        #: websockets' protocol: made at the first bytes, or for an upgrade taken on the fast
        #: path (node/upgrade.py) once the handshake's verdict is in; None until then.
        self.protocol: ServerProtocol = None  # type: ignore[assignment]
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.request: Request | None = None
        self.response: Response | None = None
        self.identity = None
        self.refusal: tuple[int, str] | None = None
        #: The 101 response, until it is written with the first frame (one system call).
        self.head: bytes | None = None
        #: While a fast-path upgrade waits for its verdict: what the client sent meanwhile.
        self._early: list[bytes] | None = None
        self._messages: list[str | bytes] | None = None  # received, not read yet
        self._waiter: asyncio.Future | None = None  # recv() waiting for a message
        self._fragments: list[bytes] | None = None  # a fragmented message so far
        self._fragments_text = False  # ... and whether it is text
        self._reading_paused = False
        self._writing_paused = False
        self._drain_waiters: list[asyncio.Future] | None = None
        self._lost = self.loop.create_future()  # done when the TCP connection is gone
        self._timer: asyncio.TimerHandle | None = None  # open, then close, timeout
        self._ping: tuple[bytes, asyncio.Future] | None = None

    # -- what the node uses ----------------------------------------------------------

    async def recv(self) -> str | bytes:
        """The next message (``str`` for text, ``bytes`` for binary).

        Raises:
            ConnectionClosed: once the connection is closed and every message was read.
        """
        messages = self._messages
        if messages:
            message = messages.pop(0)
            if self._reading_paused and len(messages) <= RESUME_AT:
                self._reading_paused = False
                self.transport.resume_reading()
            return message
        if self.protocol.state is _CLOSED:
            raise self.protocol.close_exc
        self._waiter = waiter = self.loop.create_future()
        try:
            return await waiter
        finally:
            self._waiter = None

    def write_head(self) -> None:
        """Write the 101 response now if it is still held (see ``head``)."""
        head, self.head = self.head, None
        if head is not None and not self._lost.done():
            self.transport.write(head)

    def write(self, data: bytes) -> None:
        """Write pre-framed bytes, after the held 101 if it is still held (one system call)."""
        head = self.head
        if head is not None:
            self.head, data = None, head + data
        self.transport.write(data)

    def send_data(self) -> None:
        """Write what the protocol has to send (frames, or the end of the stream); nothing
        once the connection is lost (the transport would refuse it)."""
        if self._lost.done():
            self.protocol.data_to_send()
            return
        for data in self.protocol.data_to_send():
            if data:
                self.write(data)
            else:  # websockets' SEND_EOF: half-close, and wait (bounded) for the client's
                if self.transport.can_write_eof():
                    try:
                        self.transport.write_eof()
                    except Exception:  # noqa: BLE001 - uvloop raises if the socket is gone
                        pass
                else:
                    self.transport.close()
                self._expect_close()

    async def drain(self) -> None:
        """Return once the transport's buffer is below ``WRITE_LIMIT`` (at once if it is)."""
        if self._writing_paused and not self._lost.done():
            waiter = self.loop.create_future()
            if self._drain_waiters is None:
                self._drain_waiters = []
            self._drain_waiters.append(waiter)
            await waiter

    def ping(self) -> asyncio.Future:
        """Send a ping; the future is done when its pong arrives (cancelled if the connection
        is lost first). One ping at a time: a new one replaces the last."""
        data = os.urandom(4)
        pong = self.loop.create_future()
        self._ping = (data, pong)
        self.protocol.send_ping(data)
        self.send_data()
        return pong

    async def close(self, code: int = WsCloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Send a close frame (if open) and wait until the TCP connection is gone: the client
        answers, or it is dropped after the server's ``close_timeout``."""
        state = self.protocol.state if self.protocol is not None else _CONNECTING
        if state is _OPEN:
            self.protocol.send_close(code, reason)
            self.send_data()
            self._expect_close()
        elif state is _CONNECTING:
            self.transport.abort()
        await asyncio.shield(self._lost)

    def forget_request(self, path: str) -> None:
        """After the handshake: keep neither the response nor the request's headers and path
        (with the JWT). websockets' parser still references the request object, so it is
        emptied in place rather than dropped (docs/performance.md)."""
        self.response = None
        request = self.request
        if request is not None:
            request.path = path
            request.headers = NO_HEADERS

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_LIMIT)
        self.server.connections.add(self)
        if self.server.open_timeout is not None:
            self._timer = self.loop.call_later(self.server.open_timeout, transport.abort)

    def data_received(self, data: bytes) -> None:
        protocol = self.protocol
        if protocol is None:
            if self._early is not None:  # a fast-path upgrade waits for its verdict
                self._early.append(data)
                self.transport.pause_reading()  # one read at most until then
                return
            fast = upgrade.recognize(data, self.server.extensions is not None)
            if fast is not None:
                self._early = []
                self._start(*fast)
                return
            protocol = self.protocol = self._new_protocol()
        protocol.receive_data(data)
        events = protocol.events_received()
        self.send_data()  # answers to pings and close frames, a failure's close frame
        if protocol.close_expected():
            self._expect_close()
        for event in events:
            if type(event) is Request:
                self._start(event)
                continue
            opcode = event.opcode
            if opcode is _TEXT or opcode is _BINARY or opcode is _CONT:
                self._message_part(event)
            elif opcode is _PONG:
                ping = self._ping
                if ping is not None and event.data == ping[0]:
                    self._ping = None
                    if not ping[1].done():
                        ping[1].set_result(None)

    def eof_received(self) -> None:
        if self.protocol is None:
            return  # before any request, or during a fast-path verdict: the transport closes
        self.protocol.receive_eof()
        self.protocol.events_received()
        self.send_data()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.protocol is not None:
            self.protocol.receive_eof()  # idempotent: the state is CLOSED from here on
        self.server.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._lost.set_result(None)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(self.protocol.close_exc)
        if self._ping is not None:
            self._ping[1].cancel()
            self._ping = None
        self._wake_writers()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writers()

    # -- inside ----------------------------------------------------------------------

    def _wake_writers(self) -> None:
        waiters, self._drain_waiters = self._drain_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def _head_deadline(self) -> None:
        """Runs in the iteration after the handler's first step, before the callbacks that
        step scheduled (a flush of its frames, which writes the head with them): the head is
        written one iteration later if nothing took it by then."""
        if self.head is not None:
            self.loop.call_soon(self.write_head)

    def _expect_close(self) -> None:
        """The TCP connection should end soon: drop it if it has not after close_timeout."""
        if self._timer is None and not self._lost.done():
            self._timer = self.loop.call_later(self.server.close_timeout, self.transport.abort)

    def _message_part(self, frame) -> None:
        opcode = frame.opcode
        if opcode is _CONT:
            parts = self._fragments
            if parts is None:
                return  # the protocol has failed the connection already
            parts.append(frame.data)
            if not frame.fin:
                return
            self._fragments = None
            data, text = b"".join(parts), self._fragments_text
        elif not frame.fin:
            self._fragments, self._fragments_text = [frame.data], opcode is _TEXT
            return
        else:
            data, text = frame.data, opcode is _TEXT
        if text:
            try:
                message: str | bytes = str(data, "utf-8")
            except UnicodeDecodeError as exc:
                self.protocol.fail(WsCloseCode.INVALID_DATA,
                                   f"{exc.reason} at position {exc.start}")
                self.send_data()
                self._expect_close()
                return
        else:
            message = bytes(data)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(message)
            return
        messages = self._messages
        if messages is None:
            self._messages = messages = []
        messages.append(message)
        if len(messages) >= MAX_QUEUE and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def _new_protocol(self, state: State = _CONNECTING) -> ServerProtocol:
        server = self.server
        return ServerProtocol(max_size=server.max_size, extensions=server.extensions,
                              logger=WS_LOG, state=state)

    def _start(self, request: Request, accept: str | None = None) -> None:
        """Serve ``request``; ``accept`` is its ``Sec-WebSocket-Accept`` when the fast path
        (node/upgrade.py) took it, and there is no protocol yet."""
        self.request = request
        task = self.loop.create_task(self._serve(request, accept))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    def _open_fast(self, accept: str) -> None:
        """Upgraded on the fast path: an open protocol, the 101 held (as below), and what the
        client sent meanwhile read now."""
        self.protocol = self._new_protocol(_OPEN)
        self.server.fast_upgrades += 1
        self.head = upgrade.response_head(accept, self.server.server_header)
        self.loop.call_soon(self._head_deadline)
        self._read_early()

    def _read_early(self) -> None:
        early, self._early = self._early, None
        if early:
            self.transport.resume_reading()
            if self.protocol.state is _OPEN:
                self.data_received(b"".join(early))
            # else: refused, so websockets would discard it too

    async def _serve(self, request: Request, accept: str | None) -> None:
        """The handshake's verdict and answer, then the handler for the life of the
        connection, then the close."""
        server = self.server
        try:
            try:
                response = await server.process_request(self, request)
            except Exception:
                log.error("process_request failed", exc_info=True)
                if self.protocol is None:  # the fast path's verdict failed
                    self.protocol = self._new_protocol()
                response = self.protocol.reject(http.HTTPStatus.INTERNAL_SERVER_ERROR,
                                                "Failed to open a WebSocket connection.\n"
                                                "See server log for more information.\n")
            if not self._answer(request, accept, response):
                return
            code = WsCloseCode.NORMAL_CLOSURE
            try:
                await server.handler(self)
            except Exception:
                log.error("connection handler failed", exc_info=True)
                code = WsCloseCode.INTERNAL_ERROR  # 1011, no details (as websockets does)
            self.write_head()
            await self.close(code)
        except Exception:
            log.error("connection failed", exc_info=True)
            self.transport.abort()

    def _answer(self, request: Request, accept: str | None, response: Response | None) -> bool:
        """Answer the handshake (``response`` None: upgrade); True when upgraded, with the 101
        held in ``head`` for the handler's first frame. A refusal is written with the end of
        the stream."""
        server = self.server
        if accept is not None:  # the fast path: no protocol yet
            if self._lost.done():
                return False  # the client went away during the handshake
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if response is None and server.serving:
                self._open_fast(accept)
                return True
            if self.protocol is None:
                self.protocol = self._new_protocol()  # to answer with a refusal, below
        protocol = self.protocol
        if response is None:
            response = protocol.accept(request)  # 400/426 for a bad upgrade
        if response.status_code == 101 and not server.serving:
            response = protocol.reject(http.HTTPStatus.SERVICE_UNAVAILABLE,
                                       "Server is shutting down.\n")
        response.headers["Server"] = server.server_header
        if protocol.state is not _CONNECTING:
            return False  # the client went away during the handshake
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.response = response
        protocol.send_response(response)
        if protocol.state is not _OPEN:
            self.send_data()  # the refusal, then the end of the stream
            self._read_early()
            return False
        self.head = b"".join(protocol.data_to_send())
        self.loop.call_soon(self._head_deadline)
        return True
