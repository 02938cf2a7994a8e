"""Resume tokens (``docs/protocol.md`` §7).

A resume token lets a client that lost its connection continue its session on any node: it
names the user, the session's rooms, the stream epoch and the old connection id, expires after
a few minutes, and is signed with an HMAC secret shared by all nodes. Keys rotate: the first
key signs, every listed key verifies, so nodes accept the previous key during a rotation.

Format: ``v1.<key id>.<payload>.<signature>``, base64url without padding, where the payload is
JSON ``{"u": user, "r": [rooms], "e": epoch, "c": conn id, "x": expiry}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass

import msgspec

from roomcast.errors import ConfigError, RoomcastError


class ResumeTokenError(RoomcastError):
    """A resume token was refused; ``reason`` is safe to show to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Payload(msgspec.Struct):
    u: str
    r: list[str]
    e: str
    c: str
    x: float


@dataclass(frozen=True, slots=True)
class ResumeClaims:
    user: str
    rooms: tuple[str, ...]
    epoch: str
    conn: str
    expires_at: float


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64_bytes(data: bytes) -> bytes:
    """Base64url without padding, in one step (what ``urlsafe_b64encode`` does, without its
    layers: two per token, two tokens per join)."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _kid(key: bytes) -> str:
    return _b64_bytes(hashlib.sha256(key).digest()[:6]).decode()


class ResumeSigner:
    """Signs with ``keys[0]``, verifies with any of ``keys``.

    Args:
        keys: secrets, newest first; each at least 32 bytes.
        ttl: seconds a token stays valid.
    """

    def __init__(self, keys: list[str] | tuple[str, ...], ttl: float = 300.0) -> None:
        if not keys:
            raise ConfigError("resume_keys", "at least one resume-token key is required")
        raw = [k.encode() for k in keys]
        if any(len(k) < 32 for k in raw):
            raise ConfigError("resume_keys", "each resume-token key must be at least 32 bytes")
        if ttl <= 0:
            raise ConfigError("resume_ttl", "must be > 0")
        # Keyed once and copied per token (hmac.new per token: ~0.4 µs more; two per join).
        self._sign_mac = hmac.new(raw[0], digestmod=hashlib.sha256)
        self._sign_prefix = f"v1.{_kid(raw[0])}.".encode()  # the same on every token
        self._macs = {_kid(k): hmac.new(k, digestmod=hashlib.sha256) for k in raw}
        self.ttl = ttl
        self._enc = msgspec.json.Encoder()
        self._dec = msgspec.json.Decoder(_Payload)

    def issue(self, user: str, rooms, epoch: str, conn: str, *, now: float | None = None) -> str:
        now = time.time() if now is None else now
        signed = self._sign_prefix + _b64_bytes(self._enc.encode(
            _Payload(user, sorted(rooms), epoch, conn, round(now + self.ttl, 3))))
        mac = self._sign_mac.copy()
        mac.update(signed)
        return (signed + b"." + _b64_bytes(mac.digest())).decode()

    def verify(self, token: str, user: str, *, now: float | None = None) -> ResumeClaims:
        """Check signature, expiry and owner.

        Raises:
            ResumeTokenError: ``resume token invalid`` (malformed, unknown key or tampered),
                ``resume token expired``, or ``resume token belongs to another user``.
        """
        parts = token.split(".") if isinstance(token, str) else []
        if len(parts) != 4 or parts[0] != "v1":
            raise ResumeTokenError("resume token invalid")
        keyed = self._macs.get(parts[1])
        if keyed is None:
            raise ResumeTokenError("resume token invalid")
        signed = ".".join(parts[:3])
        try:
            sig = _unb64(parts[3])
            mac = keyed.copy()
            mac.update(signed.encode())
            expected = mac.digest()
            if not hmac.compare_digest(sig, expected):
                raise ResumeTokenError("resume token invalid")
            p = self._dec.decode(_unb64(parts[2]))
        except (ValueError, msgspec.DecodeError, msgspec.ValidationError):
            raise ResumeTokenError("resume token invalid") from None
        now = time.time() if now is None else now
        if p.x < now:
            raise ResumeTokenError("resume token expired")
        if not hmac.compare_digest(p.u.encode(), user.encode()):
            raise ResumeTokenError("resume token belongs to another user")
        return ResumeClaims(p.u, tuple(p.r), p.e, p.c, p.x)
