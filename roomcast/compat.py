"""A start-up check that the installed nats-py and websockets still have the internals roomcast
relies on for speed (docs/performance.md): fail fast, with a clear message, instead of an
AttributeError in the middle of serving. (websockets is otherwise used through its public
Sans-I/O API, ``node/wsconn.py``; the one internal is the two slots of ``Headers`` that the
upgrade's fast path fills, ``node/upgrade.py``.)

Tested versions: ``pyproject.toml`` pins the ranges; ``requirements.lock`` the exact ones the
image and CI install; ``make test-latest`` runs the suite against the newest releases.
"""

from __future__ import annotations

import inspect
import re

from roomcast.errors import ConfigError

#: What the seams use, by owner: attributes of the class (methods) or of an instance.
NATS_CLIENT_METHODS = {
    "_process_msg": ("sid", "subject", "reply", "data", "headers"),
    "_process_headers": ("headers",),
    "_send_command": ("cmd",),
    "_flush_pending": (),
}
NATS_CLIENT_ATTRIBUTES = ("_flush_queue", "_max_payload", "_max_pending_size",
                          "_pending_data_size", "stats")
#: The slots of websockets' ``Headers`` that ``node.upgrade.headers_of`` fills.
WEBSOCKETS_HEADERS_SLOTS = ("_dict", "_list")


def problems() -> list[str]:
    """What is missing from the installed libraries (empty: everything roomcast needs)."""
    import nats
    import nats.aio.client

    out: list[str] = []
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
    import websockets
    from websockets.datastructures import Headers

    slots = getattr(Headers, "__slots__", ())
    for name in WEBSOCKETS_HEADERS_SLOTS:
        if name not in slots:
            out.append(f"websockets {websockets.__version__}: Headers.{name}")
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
        raise ConfigError("dependencies", "these libraries lack what roomcast uses: "
                          + "; ".join(missing)
                          + " — install the versions in requirements.lock")
