"""The common WebSocket upgrade, recognised and answered without websockets' HTTP machinery.

websockets parses an upgrade request with a generator per line, validates it in
``ServerProtocol.accept`` and serialises a ``Response``: ~40 µs of the node's ~190 µs of CPU per
connect on the dev machine (docs/performance.md, "The upgrade's fast path"). Nearly every
upgrade a node sees is the same plain request, so :func:`recognize` accepts exactly that
common case — one complete ``GET`` request in one read, every check websockets makes passing —
and answers None for anything else, which websockets then parses and answers as before (so
every refusal, odd header, other path, extension or subprotocol offer, pipelined byte or request
split over several reads keeps websockets' behaviour). What it accepts websockets accepts too,
with the same request and the same ``Sec-WebSocket-Accept``; :func:`response_head` writes the
same 101 websockets would (both property-tested against websockets in
tests/unit/test_upgrade.py). Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import re
import time

from websockets.datastructures import Headers
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS, Request
from websockets.utils import accept_key

#: One complete request: ``GET``, a target of printable ASCII (websockets takes any ASCII; the
#: rest goes to it), HTTP/1.1, header lines of websockets' own name and value patterns
#: (``websockets.http11``), the empty line. Linear: no part's characters can end another.
_REQUEST = re.compile(rb"GET (/[\x21-\x7e]*) HTTP/1\.1\r\n"
                      rb"((?:[-!#$%&'*+.^_`|~0-9a-zA-Z]+:[\x09\x20-\x7e\x80-\xff]*\r\n)*)\r\n")
#: The whole request at most this long: no line can reach websockets' line limit.
MAX_HEAD = min(8192, MAX_LINE_LENGTH)
#: ``Connection`` values taken here (lower case); any other list of options goes to websockets.
_CONNECTION = frozenset({"upgrade", "keep-alive, upgrade", "upgrade, keep-alive"})


def recognize(data: bytes, extensions: bool) -> tuple[Request, str] | None:
    """``data`` as a request and its ``Sec-WebSocket-Accept`` value, if ``data`` is exactly
    one complete WebSocket upgrade request that ``websockets.server.ServerProtocol`` (with
    ``extensions`` when the server offers compression) would accept, nothing before or after
    it; None when it is anything else (websockets parses it then)."""
    if len(data) > MAX_HEAD or (m := _REQUEST.fullmatch(data)) is None:
        return None
    lines = m.group(2).decode("iso-8859-1").split("\r\n")
    lines.pop()  # after the last line's CRLF
    if len(lines) > MAX_NUM_HEADERS:
        return None
    pairs = []
    seen: dict[str, list[str]] = {}
    for line in lines:
        name, _, value = line.partition(":")
        value = value.strip(" \t")
        low = name.lower()
        if low in seen:
            return None  # a repeated header: websockets and the node's own checks decide
        seen[low] = [value]
        pairs.append((name, value))
    connection = seen.get("connection")
    upgrade = seen.get("upgrade")
    key = seen.get("sec-websocket-key")
    if (connection is None or connection[0].lower() not in _CONNECTION
            or upgrade is None or upgrade[0].lower() != "websocket"
            or key is None or seen.get("sec-websocket-version") != ["13"]
            or "transfer-encoding" in seen or "content-length" in seen
            or "sec-websocket-protocol" in seen
            or (extensions and "sec-websocket-extensions" in seen)):
        return None
    try:
        if len(base64.b64decode(key[0].encode(), validate=True)) != 16:
            return None
    except binascii.Error:
        return None
    return Request(m.group(1).decode("ascii"), headers_of(pairs, seen)), accept_key(key[0])


def headers_of(pairs: list[tuple[str, str]], by_name: dict[str, list[str]]) -> Headers:
    """websockets ``Headers`` holding ``pairs`` (``by_name``: the same by lower-case name), as
    its parser's ``set_insecure`` would build them, without a method call per header: the one
    place that fills ``Headers``' two slots directly (websockets 17; tested to equal the public
    way in tests/unit/test_upgrade.py)."""
    headers = Headers()
    headers._list = pairs
    headers._dict = by_name
    return headers


_date = (0, "")


def http_date() -> str:
    """The ``Date`` header's value (RFC 9110 IMF-fixdate), formatted once per second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, email.utils.formatdate(now, usegmt=True))
    return _date[1]


def response_head(accept: str, server: str) -> bytes:
    """The 101 websockets' ``accept`` builds for a request :func:`recognize` took (with
    ``Server`` added, as the node's server does), serialised."""
    return (f"HTTP/1.1 101 Switching Protocols\r\nDate: {http_date()}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nServer: {server}\r\n"
            f"\r\n").encode()
