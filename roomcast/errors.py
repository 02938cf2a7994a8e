"""Exceptions raised by roomcast.

::

    RoomcastError
     ├── AuthError            a token was missing, malformed, badly signed or expired (the peer's
     │                        mistake; the node answers HTTP 401 before the upgrade)
     ├── ConfigError          a setting is invalid (our mistake, found at start-up)
     ├── BackplaneError       the backplane could not do what was asked (temporary)
     │    └── PublishError    a publish was not acknowledged within the retry budget
     └── ClientError          raised by the client library (roomcast.client)
          ├── AuthenticationFailed  the node refused the token (HTTP 401, or close 4500)
          ├── RequestRejected       the server answered a request with an error frame
          │    └── PermissionDenied  ... with code ``forbidden``
          ├── PublishQueueFull      too many publishes waiting for an ack
          └── ClientClosed          the client was closed

Errors carry fields, not just text. Client-visible errors are codes from
:class:`roomcast.protocol.ErrorCode`; nothing here leaks into close reasons.
"""

from __future__ import annotations


class RoomcastError(Exception):
    """Root of every roomcast exception."""


class AuthError(RoomcastError):
    """A token was refused. ``reason`` is safe to send to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConfigError(RoomcastError, ValueError):
    """A configuration value is invalid. ``field`` names the setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class BackplaneError(RoomcastError):
    """The backplane failed; retrying later may succeed."""


class PublishError(BackplaneError):
    """A publish was not acknowledged by JetStream within the retry budget."""

    def __init__(self, room: str, attempts: int, cause: BaseException | None = None) -> None:
        super().__init__(f"publish to {room!r} not acknowledged after {attempts} attempts")
        self.room = room
        self.attempts = attempts
        self.__cause__ = cause


class ClientError(RoomcastError):
    """Root of the errors the client library raises."""


class AuthenticationFailed(ClientError):
    """The token was refused; reconnecting with the same token will not help."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RequestRejected(ClientError):
    """The server answered with an ``error`` frame (``docs/protocol.md`` §5)."""

    def __init__(self, code: str, message: str, *, temporary: bool = False,
                 room: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.temporary = temporary
        self.room = room


class PermissionDenied(RequestRejected):
    """The token does not permit this room for this operation."""


class PublishQueueFull(ClientError):
    """More publishes are waiting for an acknowledgement than the client allows."""


class ClientClosed(ClientError):
    """The client was closed (or failed for good) before the operation completed."""
