"""Settings of an edge node: one frozen dataclass, validated when built.

Only :mod:`roomcast.cli` reads environment variables; every setting has a flag and a README row.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
from dataclasses import dataclass, field

from roomcast.auth import AuthConfig
from roomcast.backplane.nats import NatsConfig
from roomcast.backplane.subjects import valid_tokens
from roomcast.errors import ConfigError
from roomcast.presence.tracker import PresenceConfig


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class NodeConfig:
    """Everything an edge node needs.

    Args:
        auth: how client tokens are verified.
        nats: the backplane connection and stream settings.
        node_id: name of this node in logs, metrics and welcome frames.
        host, port: where to listen (WebSocket on ``/ws``, HTTP endpoints on the same port).
        max_frame: largest client frame in bytes; larger ones close the connection with 1009.
        max_rooms_per_connection: joins beyond this get ``too_many_rooms``.
        rate_limit, rate_burst: frames per second a connection may send (token bucket).
        flood_close_after: consecutive rate-limited frames after which the connection is
            closed with 4002.
        send_buffer_limit: bytes queued to one client before it is a slow consumer (closed
            with 4001; it resumes from its last ``seq``).
        ping_interval, ping_timeout: WebSocket keepalive in seconds (None disables).
        compression: permessage-deflate on or off (off costs less CPU and memory).
        history_page: messages read from JetStream per history request.
        max_connections: refuse upgrades beyond this many (503); 0 for no limit.
        listen_backlog: pending TCP connections the kernel queues (capped by
            ``net.core.somaxconn``); large, so a reconnect storm is not slowed by SYN retries.
        replay_cache_bytes: memory for each room's last messages (at most 256 or 64 KiB per
            room), served to resuming clients without a JetStream read; 0 turns it off.
        drain_window: seconds over which a draining node spreads its clients' closes (so
            they do not all reconnect to the other nodes in the same instant).
        drain_timeout: seconds a draining node then waits for in-flight publishes.
        resume_keys: HMAC secrets for resume tokens, newest first (all nodes share them; keep
            the previous one listed during a rotation). Empty: derived from an HMAC JWT key.
        resume_ttl: seconds a resume token stays valid.
        internal_port: port for ``/healthz``, ``/readyz`` and ``/metrics`` (not served on
            the public port); 0 picks a free one.
        internal_host: address for the internal port (default: ``host``).
        api_key_file: keys (one per line) the server API over HTTP accepts in ``X-API-Key``
            on the internal port; without it that API answers 401.
        presence: presence settings; None turns presence off.
        allowed_origins: origins (``https://app.example.com``) whose pages may open WebSockets,
            besides the node's own origin; ``*`` allows any. Empty: localhost origins only
            (development). Clients that send no Origin (non-browsers) are not affected.
    """

    auth: AuthConfig
    nats: NatsConfig = field(default_factory=NatsConfig)
    node_id: str = field(default_factory=default_node_id)
    host: str = "0.0.0.0"
    port: int = 8765
    internal_port: int = 9090
    internal_host: str | None = None
    api_key_file: str | None = None
    max_frame: int = 64 * 1024
    max_rooms_per_connection: int = 100
    rate_limit: float = 200.0
    rate_burst: int = 400
    flood_close_after: int = 100
    send_buffer_limit: int = 4 * 1024 * 1024
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    compression: bool = False
    history_page: int = 256
    max_connections: int = 0
    listen_backlog: int = 4096
    replay_cache_bytes: int = 32 * 1024 * 1024
    drain_window: float = 5.0
    drain_timeout: float = 10.0
    resume_keys: tuple[str, ...] = ()
    resume_ttl: float = 300.0
    presence: PresenceConfig | None = field(default_factory=PresenceConfig)
    allowed_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checks = [
            ("port", 0 <= self.port <= 65535, "must be 0..65535"),
            ("internal_port", 0 <= self.internal_port <= 65535
             and (self.internal_port != self.port or self.port == 0),
             "must be 0..65535 and not the public port"),
            ("max_frame", self.max_frame >= 1024, "must be >= 1024 bytes"),
            ("max_rooms_per_connection", self.max_rooms_per_connection >= 1, "must be >= 1"),
            ("rate_limit", self.rate_limit > 0, "must be > 0"),
            ("rate_burst", self.rate_burst >= 1, "must be >= 1"),
            ("flood_close_after", self.flood_close_after >= 1, "must be >= 1"),
            ("send_buffer_limit", self.send_buffer_limit >= 64 * 1024, "must be >= 65536"),
            ("history_page", 1 <= self.history_page <= 10_000, "must be 1..10000"),
            ("max_connections", self.max_connections >= 0, "must be >= 0"),
            ("listen_backlog", self.listen_backlog >= 1, "must be >= 1"),
            ("replay_cache_bytes", self.replay_cache_bytes >= 0, "must be >= 0"),
            ("drain_timeout", self.drain_timeout >= 0, "must be >= 0"),
            ("drain_window", self.drain_window >= 0, "must be >= 0"),
            ("resume_ttl", 0 < self.resume_ttl <= 86400, "must be 1..86400 seconds"),
            # It becomes part of NATS subjects (presence sync/evict): the subject validator.
            ("node_id", valid_tokens(self.node_id, 128),
             "1..128 characters: dot-separated tokens of A-Z a-z 0-9 _ -"),
        ]
        for name, ok, message in checks:
            if not ok:
                raise ConfigError(name, message)
        if not self.resume_keys and not self.auth.algorithms[0].startswith("HS"):
            raise ConfigError("resume_keys", "required when client tokens use a public key")

    def effective_resume_keys(self) -> tuple[str, ...]:
        """The resume-token keys; derived from the HMAC JWT key when none are set."""
        if self.resume_keys:
            return self.resume_keys
        derived = hmac.new((self.auth.key or "").encode(), b"roomcast resume token v1", hashlib.sha256)
        return (derived.hexdigest(),)
