"""Structured JSON logs, one object per line, each carrying the node id; credentials in URLs
are redacted from every line (``redact``)."""

from __future__ import annotations

import logging
import re
import sys
import time

import msgspec

_encode = msgspec.json.Encoder().encode
_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


#: ``scheme://user:password@`` (or ``scheme://token@``): what a URL carries as credentials.
_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.\-]*://)[^/@\s'\"]*@", re.I)


def redact(text: str) -> str:
    """``text`` with the userinfo of every URL in it replaced by ``***``."""
    return _USERINFO.sub(r"\g<scheme>***@", text) if "@" in text else text


def redact_urls(urls) -> list[str]:
    return [redact(u) for u in urls]


class JsonFormatter(logging.Formatter):
    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "node": self.node_id,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STD and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool, type(None))) \
                    else repr(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact(_encode(out).decode())


class RedactingFormatter(logging.Formatter):
    """A plain-text formatter whose every line goes through :func:`redact`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(node_id: str, level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(node_id))
    else:
        handler.setFormatter(RedactingFormatter(
            f"%(asctime)s %(levelname)s [{node_id}] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # websockets logs every failed handshake at INFO/ERROR; keep them at WARNING.
    logging.getLogger("websockets").setLevel(max(logging.WARNING, root.level))
