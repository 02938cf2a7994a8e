"""A minimal, fast WebSocket client for load generation (client side only).

It performs the RFC 6455 handshake, masks what it sends, and hands every received text frame
to a callback as bytes. No extensions, no fragmentation support beyond what roomcast sends
(it never fragments). Not for production use; the real clients are ``roomcast.client`` and
``roomcast.js``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Callable


class WsClientProtocol(asyncio.Protocol):
    def __init__(self, path: str, host: str, on_frame: Callable[[bytes], None]) -> None:
        self.path = path
        self.host = host
        self.on_frame = on_frame
        self.buf = bytearray()
        self.handshaken = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.close_code: int | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode())

    def data_received(self, data: bytes) -> None:
        if not self.buf and self.handshaken.done():
            # The common case under load: the data starts at a frame boundary. Hand over the
            # whole text frames sliced straight from it (one copy each) and keep only a
            # trailing partial frame.
            pos = self._text_frames(data)
            if pos == len(data):
                return
            data = data[pos:]
        buf = self.buf
        buf += data
        if not self.handshaken.done():
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[:end]).split(b"\r\n", 1)[0]
            del buf[: end + 4]
            if b" 101 " not in status:
                self.handshaken.set_exception(ConnectionError(status.decode(errors="replace")))
                return
            self.handshaken.set_result(None)
        pos = 0
        n = len(buf)
        on_frame = self.on_frame
        while n - pos >= 2:
            b0 = buf[pos]
            ln = buf[pos + 1] & 0x7F
            if ln < 126:  # the common case: a small unmasked frame
                end = pos + 2 + ln
                if end > n:
                    break
                if b0 == 0x81:  # FIN + text: hand over without further checks
                    on_frame(bytes(buf[pos + 2:end]))
                    pos = end
                    continue
                hdr = 2
            elif ln == 126:
                if n - pos < 4:
                    break
                ln = struct.unpack_from("!H", buf, pos + 2)[0]
                hdr = 4
            else:
                if n - pos < 10:
                    break
                ln = struct.unpack_from("!Q", buf, pos + 2)[0]
                hdr = 10
            if n - pos < hdr + ln:
                break
            opcode = b0 & 0x0F
            payload = bytes(buf[pos + hdr: pos + hdr + ln])
            pos += hdr + ln
            if opcode == 1 or opcode == 2:
                on_frame(payload)
            elif opcode == 9:  # ping -> pong
                self._send(0xA, payload)
            elif opcode == 8:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self._send(0x8, payload[:2])
                self.transport.close()
        if pos:
            del buf[:pos]

    def _text_frames(self, data: bytes) -> int:
        """Hand over the unfragmented, unmasked text frames at the start of ``data`` (payloads
        up to 64 KiB); return where the first other or incomplete frame starts."""
        pos, n, on_frame = 0, len(data), self.on_frame
        while n - pos >= 2 and data[pos] == 0x81:
            ln = data[pos + 1]
            if ln < 126:
                start = pos + 2
            elif ln == 126 and n - pos >= 4:
                ln = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 4
            else:
                break
            end = start + ln
            if end > n:
                break
            on_frame(data[start:end])
            pos = end
        return pos

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        if n:
            m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
            masked = (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big")
        else:
            masked = b""
        self.transport.write(head + mask + masked)

    def send_text(self, payload: bytes) -> None:
        self._send(0x1, payload)

    def connection_lost(self, exc) -> None:
        if not self.handshaken.done():
            self.handshaken.set_exception(ConnectionError("closed during handshake"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)


async def connect(host: str, port: int, path: str, on_frame: Callable[[bytes], None]
                  ) -> WsClientProtocol:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: WsClientProtocol(path, f"{host}:{port}",
                                                                     on_frame), host, port)
    await proto.handshaken
    return proto
