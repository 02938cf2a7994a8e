"""A start-up check that the installed websockets and nats-py still have the internals roomcast
relies on for speed (docs/performance.md): fail fast, with a clear message, instead of an
AttributeError in the middle of serving.

Tested versions: ``pyproject.toml`` pins the ranges; ``requirements.lock`` the exact ones the
image and CI install; ``make test-latest`` runs the suite against the newest releases.
"""

from __future__ import annotations

import inspect
import re

from roomcast.errors import ConfigError

#: What the seams use, by owner: attributes of the class (methods) or of an instance.
WEBSOCKETS_CONNECTION_METHODS = ("send_data",)
WEBSOCKETS_CONNECTION_ATTRIBUTES = ("pending_pings", "protocol", "transport", "loop")
WEBSOCKETS_PROTOCOL_METHODS = ("send_text", "send_ping")
WEBSOCKETS_PROTOCOL_ATTRIBUTES = ("state",)
NATS_CLIENT_METHODS = {
    "_process_msg": ("sid", "subject", "reply", "data", "headers"),
    "_process_headers": ("headers",),
    "_send_command": ("cmd",),
    "_flush_pending": (),
}
NATS_CLIENT_ATTRIBUTES = ("_flush_queue", "_max_payload", "_max_pending_size",
                          "_pending_data_size", "stats")


def problems() -> list[str]:
    """What is missing from the installed libraries (empty: everything roomcast needs)."""
    import nats
    import nats.aio.client
    import websockets
    from websockets.asyncio.server import ServerConnection
    from websockets.protocol import Protocol, State

    out: list[str] = []
    ws = f"websockets {websockets.__version__}"
    conn_src = "".join(_source(c) for c in ServerConnection.__mro__)
    for name in WEBSOCKETS_CONNECTION_METHODS:
        if not callable(getattr(ServerConnection, name, None)):
            out.append(f"{ws}: ServerConnection.{name}()")
    for name in WEBSOCKETS_CONNECTION_ATTRIBUTES:
        if not _assigned(conn_src, name):
            out.append(f"{ws}: ServerConnection.{name}")
    proto_src = "".join(_source(c) for c in Protocol.__mro__)
    for name in WEBSOCKETS_PROTOCOL_METHODS:
        if not callable(getattr(Protocol, name, None)):
            out.append(f"{ws}: Protocol.{name}()")
    for name in WEBSOCKETS_PROTOCOL_ATTRIBUTES:
        if not hasattr(Protocol, name) and not _assigned(proto_src, name):
            out.append(f"{ws}: Protocol.{name}")
    if not hasattr(State, "OPEN"):
        out.append(f"{ws}: State.OPEN")
    client = nats.aio.client.Client
    version = getattr(nats.aio.client, "__version__", "?")
    for name, params in NATS_CLIENT_METHODS.items():
        method = getattr(client, name, None)
        if method is None:
            out.append(f"nats-py {version}: Client.{name}")
            continue
        have = list(inspect.signature(method).parameters)[1:]
        if have[:len(params)] != list(params):
            out.append(f"nats-py {version}: Client.{name}({', '.join(have)}), "
                       f"expected ({', '.join(params)})")
    client_src = _source(client)
    for name in NATS_CLIENT_ATTRIBUTES:
        if not _assigned(client_src, name):
            out.append(f"nats-py {version}: Client.{name}")
    return out


def _assigned(source: str, name: str) -> bool:
    """Whether ``source`` assigns ``self.<name>`` (an instance attribute set in ``__init__``)."""
    return re.search(rf"self\.{name}\s*(?::[^=\n]*)?=(?!=)", source) is not None


def _source(obj) -> str:
    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def check() -> None:
    """Raise a :class:`ConfigError` naming what is missing (``roomcast node`` prints it)."""
    missing = problems()
    if missing:
        raise ConfigError("dependencies", "this websockets / nats-py lacks what roomcast uses: "
                          + "; ".join(missing)
                          + " — install the versions in requirements.lock")
