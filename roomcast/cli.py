"""The ``roomcast`` command: ``node``, ``dev``, ``token``.

This is the only module that reads ``ROOMCAST_*`` environment variables: every flag of
``roomcast node`` has one (the README's configuration table lists them).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from roomcast.errors import BackplaneError, ClientError, ConfigError
from roomcast.logs import redact


class EnvDefault(argparse.Action):
    """A flag whose default comes from ``ROOMCAST_<NAME>`` when that is set."""

    def __init__(self, option_strings, dest, env=None, default=None, required=False, **kw):
        env = env or "ROOMCAST_" + dest.upper()
        if env in os.environ:
            default = os.environ[env]
            required = False
        kw["help"] = (kw.get("help") or "") + f" [env {env}]"
        super().__init__(option_strings, dest, default=default, required=required, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)


def _flag(p: argparse.ArgumentParser, name: str, **kw) -> None:
    p.add_argument(name, action=EnvDefault, **kw)


def _bool(v: str | bool) -> bool:
    if isinstance(v, bool):
        return v
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {v!r}")


def add_nats_credential_flags(p: argparse.ArgumentParser) -> None:
    _flag(p, "--nats-user", default=None, help="NATS user (with --nats-password-file)")
    _flag(p, "--nats-password-file", default=None, help="file holding the NATS password")
    _flag(p, "--nats-creds", default=None,
          help="NATS .creds file (JWT + NKey seed) or NKey seed file")
    _flag(p, "--nats-tls-ca", default=None, help="CA file to verify the NATS servers")
    _flag(p, "--nats-tls-cert", default=None, help="client certificate for TLS to NATS")
    _flag(p, "--nats-tls-key", default=None, help="key of --nats-tls-cert")


def nats_credentials_from(args: argparse.Namespace) -> dict:
    """NatsConfig keyword arguments from the credential flags (secrets read from files)."""
    password = None
    if args.nats_password_file:
        try:
            password = Path(args.nats_password_file).read_text().strip()
        except OSError as exc:
            raise ConfigError("nats_password_file", f"cannot read it: {exc.strerror}") from None
    return {"user": args.nats_user, "password": password, "creds_file": args.nats_creds,
            "tls_ca": args.nats_tls_ca, "tls_cert": args.nats_tls_cert,
            "tls_key": args.nats_tls_key}


def namespaces_from(args: argparse.Namespace) -> dict:
    """``--namespaces FILE`` read (an invalid file: a ConfigError naming its line), with the
    flags' settings as the defaults it does not override."""
    from roomcast import namespaces

    if not getattr(args, "namespaces", None):
        return {}
    defaults = namespaces.Namespace(
        history=int(args.history_per_room), history_max_age=float(args.history_max_age),
        member_list_max=int(getattr(args, "presence_list_max", 100)),
        presence=_bool(getattr(args, "presence", True)))
    return {"namespaces": namespaces.load(args.namespaces, defaults),
            "namespaces_file": args.namespaces}


def add_stream_flags(p: argparse.ArgumentParser) -> None:
    _flag(p, "--replicas", type=int, default=1, help="JetStream stream replicas (1 or 3)")
    _flag(p, "--history-per-room", type=int, default=1000, help="messages kept per room")
    _flag(p, "--history-max-age", type=float, default=86400.0,
          help="seconds a message is kept (0: no limit)")
    _flag(p, "--presence-events-max-age", type=float, default=3600.0,
          help="seconds the presence event log is kept")
    _flag(p, "--namespaces", default=None,
          help="TOML file of per-room-prefix options and streams (docs/namespaces.md)")


def add_node_flags(p: argparse.ArgumentParser) -> None:
    _flag(p, "--nats-url", default="nats://127.0.0.1:4222",
          help="NATS server URL(s), comma-separated")
    add_nats_credential_flags(p)
    _flag(p, "--nats-connect-timeout", type=float, default=30.0,
          help="seconds to keep trying to reach NATS at start-up before giving up")
    _flag(p, "--host", default="0.0.0.0", help="address to listen on")
    _flag(p, "--port", type=int, default=8765, help="public port: WebSocket (/ws), the client")
    _flag(p, "--internal-port", type=int, default=9090,
          help="port for /healthz, /readyz and /metrics (keep it off the Ingress)")
    _flag(p, "--internal-host", default=None, help="address for the internal port (default: --host)")
    _flag(p, "--api-key-file", default=None,
          help="keys, one per line, for the server API over HTTP (POST /api/<method> on the "
               "internal port, header X-API-Key); without it that API answers 401")
    _flag(p, "--node-id", default=None, help="node name (default: hostname-pid)")
    _flag(p, "--jwt-key", default=None, help="HMAC secret or PEM public key for client tokens")
    _flag(p, "--jwt-key-file", default=None, help="read --jwt-key from this file")
    _flag(p, "--jwt-jwks-url", default=None,
          help="fetch the public keys of client tokens from this JWKS URL (by 'kid'; "
               "instead of --jwt-key; needs --jwt-algorithms RS256 or similar)")
    _flag(p, "--jwt-jwks-refresh", type=float, default=300.0,
          help="seconds between refreshes of the JWKS (an unknown kid refetches at most "
               "every 10 s)")
    _flag(p, "--jwt-algorithms", default="HS256", help="allowed JWT algorithms, comma-separated")
    _flag(p, "--jwt-audience", default=None, help="required 'aud' claim")
    _flag(p, "--jwt-issuer", default=None, help="required 'iss' claim")
    add_stream_flags(p)
    _flag(p, "--streams", default="create-missing",
          help="create-missing: create a stream that does not exist (never change one); "
               "verify: create nothing (roomcast streams apply does)")
    _flag(p, "--max-frame", type=int, default=65536, help="largest client frame, bytes")
    _flag(p, "--max-rooms", type=int, default=100, help="rooms one connection may join")
    _flag(p, "--max-connections", type=int, default=0, help="connections per node (0: no limit)")
    _flag(p, "--replay-cache-mb", type=float, default=32.0,
          help="memory for the rooms' last messages, served to resumes without JetStream "
               "(0 turns it off)")
    _flag(p, "--listen-backlog", type=int, default=4096,
          help="TCP connections queued before accept (capped by net.core.somaxconn)")
    _flag(p, "--rate-limit", type=float, default=200.0, help="client frames per second")
    _flag(p, "--rate-burst", type=int, default=400, help="client frame burst")
    _flag(p, "--send-buffer-limit", type=int, default=4 * 1024 * 1024,
          help="bytes buffered to one client before it is closed as a slow consumer")
    _flag(p, "--ping-interval", type=float, default=20.0, help="keepalive ping, seconds (0: off)")
    _flag(p, "--compression", type=_bool, default=False, help="permessage-deflate on/off")
    _flag(p, "--drain-window", type=float, default=5.0,
          help="seconds over which a draining node spreads its clients' closes")
    _flag(p, "--drain-timeout", type=float, default=10.0,
          help="seconds a draining node waits for in-flight publishes")
    _flag(p, "--resume-keys", default="",
          help="resume-token HMAC secrets, comma-separated, newest first (default: derived "
               "from an HMAC --jwt-key)")
    _flag(p, "--resume-keys-file", default=None, help="read --resume-keys from this file")
    _flag(p, "--resume-ttl", type=float, default=300.0, help="seconds a resume token is valid")
    _flag(p, "--presence", type=_bool, default=True, help="cluster-wide presence on/off")
    _flag(p, "--presence-heartbeat", type=float, default=1.0, help="presence heartbeat, seconds")
    _flag(p, "--presence-timeout", type=float, default=5.0,
          help="seconds without heartbeat before a node's connections are removed (<= 10)")
    _flag(p, "--presence-list-max", type=int, default=100,
          help="rooms list members (joined, presence_diff) up to this many users, else counts")
    _flag(p, "--presence-interval", type=float, default=0.1,
          help="seconds a room's presence changes are batched into one presence_diff")
    _flag(p, "--presence-count-interval", type=float, default=1.0,
          help="at most one presence_count per big room this often, seconds")
    _flag(p, "--presence-scope", choices=["cluster", "rooms"], default="cluster",
          help="cluster: every node holds every room's presence; rooms: only the rooms it "
               "has members in (docs/presence.md)")
    _flag(p, "--allowed-origins", default="",
          help="origins allowed to open WebSockets besides the node's own, comma-separated "
               "('*': any; empty: localhost only)")
    _flag(p, "--log-level", default="info", help="debug, info, warning, error")
    _flag(p, "--log-format", default="json", help="json or text")


def node_config_from(args: argparse.Namespace):
    from roomcast.auth import AuthConfig
    from roomcast.backplane.nats import NatsConfig
    from roomcast.config import NodeConfig, default_node_id
    from roomcast.presence.tracker import PresenceConfig

    key = args.jwt_key
    if args.jwt_key_file:
        key = Path(args.jwt_key_file).read_text().strip()
    if not key and not args.jwt_jwks_url:
        raise ConfigError("jwt_key", "set --jwt-key, --jwt-key-file, ROOMCAST_JWT_KEY or "
                          "--jwt-jwks-url")
    node_id = args.node_id or default_node_id()
    ping = float(args.ping_interval) or None
    return NodeConfig(
        auth=AuthConfig(key=key, algorithms=tuple(a.strip() for a in
                                                  args.jwt_algorithms.split(",") if a.strip()),
                        audience=args.jwt_audience, issuer=args.jwt_issuer,
                        jwks_url=args.jwt_jwks_url,
                        jwks_refresh=float(args.jwt_jwks_refresh)),
        nats=NatsConfig(urls=tuple(u.strip() for u in args.nats_url.split(",") if u.strip()),
                        replicas=int(args.replicas), history_per_room=int(args.history_per_room),
                        history_max_age=float(args.history_max_age), name=f"roomcast-{node_id}",
                        streams_mode=args.streams, **namespaces_from(args),
                        connect_timeout=float(args.nats_connect_timeout),
                        **nats_credentials_from(args)),
        node_id=node_id,
        host=args.host,
        port=int(args.port),
        internal_port=int(args.internal_port),
        internal_host=args.internal_host,
        api_key_file=args.api_key_file,
        max_frame=int(args.max_frame),
        max_rooms_per_connection=int(args.max_rooms),
        max_connections=int(args.max_connections),
        listen_backlog=int(args.listen_backlog),
        replay_cache_bytes=int(float(args.replay_cache_mb) * 1024 * 1024),
        rate_limit=float(args.rate_limit),
        rate_burst=int(args.rate_burst),
        send_buffer_limit=int(args.send_buffer_limit),
        ping_interval=ping,
        ping_timeout=ping,
        compression=_bool(args.compression),
        drain_window=float(args.drain_window),
        drain_timeout=float(args.drain_timeout),
        resume_keys=tuple(k.strip() for k in (
            Path(args.resume_keys_file).read_text() if args.resume_keys_file
            else args.resume_keys).replace("\n", ",").split(",") if k.strip()),
        resume_ttl=float(args.resume_ttl),
        presence=PresenceConfig(heartbeat_interval=float(args.presence_heartbeat),
                                timeout=float(args.presence_timeout),
                                list_max=int(args.presence_list_max),
                                events_max_age=float(args.presence_events_max_age),
                                diff_interval=float(args.presence_interval),
                                count_interval=float(args.presence_count_interval),
                                scope=args.presence_scope)
        if _bool(args.presence) else None,
        allowed_origins=tuple(o.strip() for o in args.allowed_origins.split(",") if o.strip()),
    )


def cmd_node(args: argparse.Namespace) -> int:
    from roomcast import compat
    from roomcast.logs import setup_logging
    from roomcast.node.server import run_node

    config = node_config_from(args)
    compat.check()  # fail fast if websockets / nats-py lack the internals roomcast uses
    setup_logging(config.node_id, args.log_level, args.log_format)
    return _run(run_node(config))


def cmd_streams(args: argparse.Namespace) -> int:
    """``roomcast streams apply|check``: exit 0 when the streams are (now) as wanted."""
    from roomcast.backplane.nats import NatsConfig
    from roomcast.backplane.streams import apply_or_check

    nats = NatsConfig(urls=tuple(u.strip() for u in args.nats_url.split(",") if u.strip()),
                      replicas=int(args.replicas), history_per_room=int(args.history_per_room),
                      history_max_age=float(args.history_max_age), **namespaces_from(args),
                      **nats_credentials_from(args))
    lines, ok = _run(apply_or_check(nats, args.action, allow_lossy=args.yes,
                                    events_max_age=float(args.presence_events_max_age),
                                    wait=float(args.wait)))
    for line in lines:
        print(line)
    return 0 if ok else 1


def cmd_token(args: argparse.Namespace) -> int:
    from roomcast.auth import mint_token

    key = args.jwt_key or (Path(args.jwt_key_file).read_text().strip() if args.jwt_key_file
                           else None)
    if not key:
        raise ConfigError("jwt_key", "set --jwt-key, --jwt-key-file or ROOMCAST_JWT_KEY")
    print(mint_token(key, args.user, subscribe=args.subscribe.split(","),
                     publish=args.publish.split(","), ttl=float(args.ttl),
                     algorithm=args.algorithm))
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from roomcast.dev import run_dev

    node_args = tuple(a for a in args.node_args if a != "--")
    return run_dev(nodes=int(args.nodes), nats=int(args.nats), port=int(args.port),
                   host=args.host, node_args=node_args)


def _client_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("room")
    _flag(p, "--url", env="ROOMCAST_URL", default="ws://127.0.0.1:8765/ws",
          help="node URL(s), comma-separated")
    _flag(p, "--token", env="ROOMCAST_TOKEN", default=None, help="JWT")


def cmd_tail(args: argparse.Namespace) -> int:
    from roomcast.client.terminal import tail

    if not args.token:
        raise ConfigError("token", "set --token or ROOMCAST_TOKEN (roomcast token makes one)")
    return _run(tail(args.url.split(","), args.token, args.room, as_json=not args.text))


def cmd_chat(args: argparse.Namespace) -> int:
    from roomcast.client.terminal import chat

    if not args.token:
        raise ConfigError("token", "set --token or ROOMCAST_TOKEN (roomcast token makes one)")
    return _run(chat(args.url.split(","), args.token, args.room))


def cmd_admin(args: argparse.Namespace) -> int:
    import json

    from roomcast.presence.admin import query

    what = args.what
    arg = args.arg
    if what in ("presence", "user") and not arg:
        raise ConfigError(what, f"roomcast admin {what} needs a {'room' if what == 'presence' else 'user'}")
    from roomcast.backplane.nats import NatsConfig

    nats = NatsConfig(urls=tuple(args.nats_url.split(",")), **nats_credentials_from(args))
    reply = _run(query(list(nats.urls), what, arg, wait=float(args.wait),
                       options=nats.connect_options()))
    print(json.dumps(reply, indent=2, sort_keys=True))
    return 1 if "error" in reply else 0


def _run(coro) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        return asyncio.run(coro)
    profile = os.environ.get("ROOMCAST_CPROFILE")
    if not profile:
        return uvloop.run(coro)
    # Profiling aid (docs/performance.md): cProfile stats written to <prefix><pid> at exit.
    # Under uvloop, idle time shows up as tottime of the outermost coroutines; read cumtime.
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    try:
        return uvloop.run(coro)
    finally:
        prof.disable()
        prof.dump_stats(f"{profile}{os.getpid()}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roomcast", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p_node = sub.add_parser("node", help="run one edge node")
    add_node_flags(p_node)
    p_node.set_defaults(func=cmd_node)

    p_dev = sub.add_parser("dev", help="local cluster: 3 NATS servers + edge nodes")
    p_dev.add_argument("--nodes", type=int, default=2, help="edge nodes to start")
    p_dev.add_argument("--nats", type=int, default=3, help="NATS servers (1 or 3)")
    p_dev.add_argument("--port", type=int, default=8765, help="first node's port")
    p_dev.add_argument("--host", default="127.0.0.1", help="address the nodes listen on")
    p_dev.add_argument("node_args", nargs=argparse.REMAINDER,
                       help="after --: flags for every `roomcast node`, e.g. "
                            "-- --allowed-origins http://localhost:3000")
    p_dev.set_defaults(func=cmd_dev)

    p_tail = sub.add_parser("tail", help="print a room's messages (JSON lines), resuming")
    _client_args(p_tail)
    p_tail.add_argument("--text", action="store_true", help="print text lines, not JSON")
    p_tail.set_defaults(func=cmd_tail)

    p_chat = sub.add_parser("chat", help="chat in a room from the terminal")
    _client_args(p_chat)
    p_chat.set_defaults(func=cmd_chat)

    p_admin = sub.add_parser("admin", help="ask the cluster over NATS (docs/admin.md)")
    p_admin.add_argument("what", choices=["presence", "rooms", "nodes", "user"])
    p_admin.add_argument("arg", nargs="?", help="room (presence) or user (user)")
    _flag(p_admin, "--nats-url", default="nats://127.0.0.1:4222", help="NATS URL(s)")
    add_nats_credential_flags(p_admin)
    p_admin.add_argument("--wait", default="5", help="seconds to wait for the answer")
    p_admin.set_defaults(func=cmd_admin)

    p_streams = sub.add_parser("streams", help="create, update or check the JetStream streams")
    p_streams.add_argument("action", choices=["apply", "check"])
    _flag(p_streams, "--nats-url", default="nats://127.0.0.1:4222", help="NATS URL(s)")
    add_nats_credential_flags(p_streams)
    add_stream_flags(p_streams)
    p_streams.add_argument("--yes", action="store_true",
                           help="apply also changes that lose redundancy or history")
    p_streams.add_argument("--wait", type=float, default=30.0,
                           help="seconds to wait for JetStream to be available")
    p_streams.set_defaults(func=cmd_streams)

    from roomcast import apicli  # its commands use this module's flag helpers

    apicli.add_commands(sub)

    p_tok = sub.add_parser("token", help="mint a development JWT")
    p_tok.add_argument("--user", required=True)
    _flag(p_tok, "--jwt-key", default=None, help="HMAC secret")
    _flag(p_tok, "--jwt-key-file", default=None, help="file holding the secret")
    p_tok.add_argument("--subscribe", default=">", help="room patterns to join, comma-separated")
    p_tok.add_argument("--publish", default=">", help="room patterns to publish to")
    p_tok.add_argument("--ttl", default="3600", help="seconds until expiry")
    p_tok.add_argument("--algorithm", default="HS256")
    p_tok.set_defaults(func=cmd_token)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    command = words[0] if words else None
    if command not in (None, "dev"):
        # A running `roomcast dev` (make run) wrote what it picked: use it where nothing is set.
        from roomcast import devenv

        if devenv.apply_defaults() and command != "node" and sys.stderr.isatty():
            print(f"roomcast: using the dev cluster's settings from {devenv.path()}",
                  file=sys.stderr)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"roomcast: configuration error: {redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except ClientError as exc:
        print(f"roomcast: {redact(str(exc))}", file=sys.stderr)
        return 1
    except BackplaneError as exc:  # NATS unreachable at start-up: one line, no traceback
        print(f"roomcast: {redact(str(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
