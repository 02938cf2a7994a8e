"""``roomcast publish|history|disconnect|unsubscribe``: the server API (docs/api.md) from the
command line, through :mod:`roomcast.api` over NATS."""

from __future__ import annotations

import argparse
import sys

from roomcast.cli import _flag, _run, add_nats_credential_flags, nats_credentials_from
from roomcast.errors import ConfigError


def add_commands(sub) -> None:
    def command(name: str, help_text: str, func):
        p = sub.add_parser(name, help=help_text)
        _flag(p, "--nats-url", default="nats://127.0.0.1:4222", help="NATS URL(s)")
        add_nats_credential_flags(p)
        p.set_defaults(func=func)
        return p

    p = command("publish", "store a message in a room (server API)", cmd_publish)
    p.add_argument("room")
    p.add_argument("json", help="the message's data, as JSON")
    p.add_argument("--id", default=None, help="idempotency key")
    p.add_argument("--from", dest="sender", default=None, help="sender (default backend)")

    p = command("history", "a room's retained messages (server API)", cmd_history)
    p.add_argument("room")
    p.add_argument("--before", type=int, default=None)
    p.add_argument("--after", type=int, default=None)
    p.add_argument("--limit", type=int, default=100)

    p = command("disconnect", "close a user's connections (server API)", cmd_disconnect)
    p.add_argument("user")
    p.add_argument("--conn", default=None, help="only this connection id")
    p.add_argument("--ban", action="store_true",
                   help="close with 4502 and revoke the user's resume tokens")
    p.add_argument("--reason", default=None, help="close reason (at most 100 characters)")

    p = command("unsubscribe", "take a user out of a room (server API)", cmd_unsubscribe)
    p.add_argument("user")
    p.add_argument("room")


def _server_api(args: argparse.Namespace):
    from roomcast.api import ServerApi
    from roomcast.backplane.nats import NatsConfig

    nats = NatsConfig(urls=tuple(u.strip() for u in args.nats_url.split(",") if u.strip()),
                      **nats_credentials_from(args))
    return ServerApi(list(nats.urls), max_reconnect_attempts=2, connect_timeout=3,
                     **nats.connect_options())


def cmd_publish(args: argparse.Namespace) -> int:
    """``roomcast publish ROOM JSON``: prints the stored message's seq."""
    import json

    try:
        data = json.loads(args.json)
    except ValueError as exc:
        raise ConfigError("json", f"not JSON: {exc}") from None

    async def go() -> int:
        async with _server_api(args) as api:
            return await api.publish(args.room, data, id=args.id, sender=args.sender)

    print(_run(go()))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """``roomcast history ROOM``: one JSON message per line, as the API returns them."""
    import json

    async def go() -> dict:
        async with _server_api(args) as api:
            return await api.history(args.room, before=args.before, after=args.after,
                                     limit=args.limit)

    page = _run(go())
    for m in page["messages"]:
        print(json.dumps(m))
    if page["more"]:
        print("# more: page on with --before (or --after) the last seq", file=sys.stderr)
    return 0


def cmd_disconnect(args: argparse.Namespace) -> int:
    """``roomcast disconnect USER``: prints how many connections were closed."""
    async def go() -> dict:
        async with _server_api(args) as api:
            return await api.disconnect(args.user, conn=args.conn, ban=args.ban,
                                        reason=args.reason)

    reply = _run(go())
    print(f"closed {reply['closed']} connection(s) on {reply['nodes']} node(s)"
          + (" (banned: resume tokens revoked)" if reply["banned"] else ""))
    return 0


def cmd_unsubscribe(args: argparse.Namespace) -> int:
    """``roomcast unsubscribe USER ROOM``: prints how many connections left the room."""
    async def go() -> dict:
        async with _server_api(args) as api:
            return await api.unsubscribe(args.user, args.room)

    reply = _run(go())
    print(f"removed {reply['removed']} connection(s) from {args.room} "
          f"on {reply['nodes']} node(s)")
    return 0
