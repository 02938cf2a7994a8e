"""Namespaces: options per room prefix, read from one TOML file (``docs/namespaces.md``).

Pure: parsing, validation and the room -> namespace lookup; no I/O beyond reading the file.
A room belongs to the namespace with the longest name that is the room itself or a dotted
prefix of it (``chat`` holds ``chat`` and ``chat.general``, not ``chatter``); rooms in no
namespace take ``[defaults]``. Every error names the file and the line.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from roomcast.backplane.subjects import valid_tokens
from roomcast.errors import ConfigError

EVENTS = ("users", "counts", "off")
PUBLISH = ("clients", "backend")
STORAGE = ("stream", "latest", "ephemeral")
MAX_STREAMS = 16


@dataclass(frozen=True)
class Namespace:
    """Args:
    name: the room prefix ("" for the defaults).
    history: messages kept per room (``max_msgs_per_subject``); 1 for ``latest`` rooms.
    history_max_age: seconds a message is kept (0: no age limit).
    presence: whether joins are tracked in presence (members, events, admin queries).
    presence_events: what members are told: ``users`` (diffs, counts above
        ``member_list_max``), ``counts`` (counts only), ``off`` (no presence frames).
    member_list_max: users a room lists before it is counted.
    publish: ``clients`` (members with a publish permission) or ``backend`` (the server API
        only: clients get ``forbidden``).
    storage: ``stream`` (every message stored, history, resume), ``latest`` (only the last
        message per room kept, and replayed to every new member on join) or ``ephemeral``
        (core NATS only: nothing stored, no ``seq``, no history, nothing replayed on resume).
    streams: JetStream streams the namespace's rooms are spread over by a stable hash.
    """

    name: str = ""
    history: int = 1000
    history_max_age: float = 24 * 3600.0
    presence: bool = True
    presence_events: str = "users"
    member_list_max: int = 100
    publish: str = "clients"
    storage: str = "stream"
    streams: int = 1

    @property
    def kept_per_room(self) -> int:
        return 1 if self.storage == "latest" else self.history


_TYPES = {f.name: f.type for f in fields(Namespace) if f.name != "name"}


class Namespaces:
    def __init__(self, defaults: Namespace, namespaces: list[Namespace] = ()) -> None:
        self.defaults = defaults
        self.by_name = {ns.name: ns for ns in namespaces}
        self._depth = max((n.count(".") + 1 for n in self.by_name), default=0)
        self._cache: dict[str, Namespace] = {}

    def of(self, room: str) -> Namespace:
        ns = self._cache.get(room)
        if ns is None:
            ns = self.defaults
            parts = room.split(".")
            for n in range(min(len(parts), self._depth), 0, -1):
                found = self.by_name.get(".".join(parts[:n]))
                if found is not None:
                    ns = found
                    break
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[room] = ns
        return ns

    def all(self) -> list[Namespace]:
        """The defaults first, then the namespaces by name."""
        return [self.defaults, *sorted(self.by_name.values(), key=lambda n: n.name)]


def single(defaults: Namespace) -> Namespaces:
    """No namespaces file: every room takes ``defaults`` (built from the node's flags)."""
    return Namespaces(defaults)


def load(path: str, defaults: Namespace) -> Namespaces:
    """Read ``path``; ``defaults`` (from the node's flags) fill what ``[defaults]`` leaves out."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError("namespaces", f"cannot read {path}: {exc.strerror or exc}") from None
    return parse(text, defaults, source=path)


def parse(text: str, defaults: Namespace, *, source: str = "namespaces.toml") -> Namespaces:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("namespaces", f"{source}: {exc}") from None
    where = _Lines(text, source)
    for key in doc:
        if key not in ("defaults", "namespaces"):
            raise ConfigError("namespaces", where.at(key, None, f"unknown table [{key}]: "
                                                     "expected [defaults] or [namespaces.NAME]"))
    base = _namespace(doc.get("defaults", {}), defaults, "", where, "defaults")
    out = []
    tables = doc.get("namespaces", {})
    if not isinstance(tables, dict):
        raise ConfigError("namespaces", where.at("namespaces", None, "must be a table"))
    for name, table in _flatten(tables):
        if not valid_tokens(name, 100):
            raise ConfigError("namespaces", where.at(f"namespaces.{name}", None,
                                                     f"namespace {name!r}: a room prefix of "
                                                     "dot-separated tokens of A-Z a-z 0-9 _ -"))
        out.append(_namespace(table, base, name, where, f"namespaces.{name}"))
    tags: dict[str, str] = {}
    for ns in out:
        tag = stream_tag(ns.name)
        if tag in tags:
            raise ConfigError("namespaces", where.at(f"namespaces.{ns.name}", None,
                                                     f"namespaces {tags[tag]!r} and {ns.name!r} "
                                                     "would share stream names"))
        tags[tag] = ns.name
    return Namespaces(base, out)


def stream_tag(name: str) -> str:
    """The namespace's part of its stream names and subjects ("DEFAULT" for the defaults)."""
    return name.replace(".", "_").replace("-", "_").upper() if name else "DEFAULT"


def _flatten(tables: dict, prefix: str = ""):
    """``[namespaces.game.lobby]`` parses as nested tables: yield ("game.lobby", options).
    A table with option keys is a namespace; a table with only sub-tables is a path."""
    for key, value in tables.items():
        name = f"{prefix}.{key}" if prefix else key
        if not isinstance(value, dict):
            yield prefix, {key: value}  # an option of the parent (reported there)
            continue
        options = {k: v for k, v in value.items() if not isinstance(v, dict)}
        subs = {k: v for k, v in value.items() if isinstance(v, dict)}
        if options or not subs:
            yield name, options
        yield from _flatten(subs, name)


def _namespace(table: dict, base: Namespace, name: str, where: _Lines, header: str
               ) -> Namespace:
    values = {}
    for key, value in table.items():
        kind = _TYPES.get(key)
        if kind is None:
            raise ConfigError("namespaces", where.at(header, key,
                                                     f"unknown option {key!r} (known: "
                                                     f"{', '.join(_TYPES)})"))
        values[key] = _check(key, value, where.at(header, key, ""))
    ns = replace(base, name=name, **values)
    if ns.presence_events != "off" and not ns.presence and "presence_events" in table:
        raise ConfigError("namespaces", where.at(header, "presence_events",
                                                 "presence_events needs presence = true"))
    return ns


def _check(key: str, value: object, at: str) -> object:
    def bad(message: str) -> ConfigError:
        return ConfigError("namespaces", f"{at}{key} {message}")

    if key in ("presence",):
        if not isinstance(value, bool):
            raise bad("must be true or false")
        return value
    if key in ("history", "member_list_max", "streams"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("must be an integer")
        low, high = {"history": (1, 1_000_000), "member_list_max": (0, 10_000),
                     "streams": (1, MAX_STREAMS)}[key]
        if not low <= value <= high:
            raise bad(f"must be {low}..{high}")
        return value
    if key == "history_max_age":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise bad("must be a number of seconds >= 0 (0: no age limit)")
        return float(value)
    choices = {"presence_events": EVENTS, "publish": PUBLISH, "storage": STORAGE}[key]
    if value not in choices:
        raise bad(f"must be one of {', '.join(map(repr, choices))}")
    return value


class _Lines:
    """Finds the line of a table header or of a key under it, for error messages (tomllib
    reports positions only for syntax errors)."""

    def __init__(self, text: str, source: str) -> None:
        self.lines = text.splitlines()
        self.source = source

    def at(self, header: str, key: str | None, message: str) -> str:
        line = self._find(header, key)
        where = f"{self.source}, line {line}: " if line else f"{self.source}: "
        return where + message

    def _find(self, header: str, key: str | None) -> int | None:
        head = re.compile(r"^\s*\[\s*" + r"\s*\.\s*".join(
            rf"(?:{re.escape(p)}|\"{re.escape(p)}\")" for p in header.split(".")) + r"\s*\]")
        whole = header.split(".", 1)
        quoted = (re.compile(rf'^\s*\[\s*{re.escape(whole[0])}\s*\.\s*"{re.escape(whole[1])}"\s*\]')
                  if len(whole) == 2 else head)
        start = None
        for i, line in enumerate(self.lines, 1):
            if head.match(line) or quoted.match(line):
                start = i
                if key is None:
                    return i
                continue
            if start is not None:
                if re.match(r"^\s*\[", line):
                    break
                if re.match(rf"^\s*\"?{re.escape(key)}\"?\s*=", line):
                    return i
        return start
