"""Server-to-client WebSocket framing for the fan-out path (RFC 6455 §5.2).

A server's frames are not masked, so one message's frame is the same bytes for every member:
build it once per message per node and write it to each member's transport. Only used when
permessage-deflate is off (compressed frames differ per connection's compression context).
"""

from __future__ import annotations

import struct

_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame carrying ``payload``."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return _H16.pack(0x81, 126, n) + payload
    return _H64.pack(0x81, 127, n) + payload
