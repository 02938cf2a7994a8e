"""Settings of the NATS backplane (:class:`NatsConfig`): servers, credentials, TLS, streams."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

from roomcast.backplane import streams, subjects
from roomcast.errors import ConfigError
from roomcast.logs import redact_urls


@dataclass(frozen=True)
class NatsConfig:
    """Settings of the NATS backplane.

    Args:
        urls: NATS server URLs; the client fails over between them.
        stream: JetStream stream name.
        replicas: stream replicas (1 for a single server, 3 in a cluster).
        history_per_room: messages retained per room (``max_msgs_per_subject``).
        history_max_age: seconds a message is retained (0: no age limit).
        duplicate_window: seconds a ``msg_id`` is remembered; longer than the publish budget.
        publish_attempt_timeout: seconds to wait for one JetStream ack.
        publish_budget: seconds a publish keeps being retried (same ``msg_id``) before failing.
        name: connection name shown by ``nats-server``.
        user, password: NATS credentials (instead of putting them in the URLs).
        creds_file: a NATS ``.creds`` file (JWT + NKey seed) or an NKey seed file.
        tls_ca, tls_cert, tls_key: files for TLS to NATS (the CA to trust; a client
            certificate and its key for mutual TLS).

    Credentials never reach logs or error messages: the URLs are shown with their userinfo
    redacted (``display_urls``) and the secrets are left out of ``repr``.
    """

    urls: tuple[str, ...] = field(default=("nats://127.0.0.1:4222",), repr=False)
    stream: str = subjects.STREAM
    replicas: int = 1
    history_per_room: int = 1000
    history_max_age: float = 24 * 3600.0
    duplicate_window: float = 120.0
    publish_attempt_timeout: float = 2.0
    publish_budget: float = 20.0
    name: str = "roomcast"
    connect_timeout: float = 30.0
    options: dict = field(default_factory=dict, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    creds_file: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    #: ``create-missing`` (default): create a stream that does not exist, never change one
    #: that does; ``verify``: create nothing (production: ``roomcast streams apply`` does).
    streams_mode: str = "create-missing"
    #: Options per room prefix (``--namespaces``, :mod:`roomcast.namespaces`); None: every
    #: room takes the settings above.
    namespaces: object = field(default=None, repr=False)
    #: The file they were read from, for the ``roomcast streams apply`` hint.
    namespaces_file: str | None = None

    def layout(self):
        """Where each room is stored (:class:`roomcast.backplane.layout.Layout`)."""
        from roomcast.backplane.layout import Layout

        if self.namespaces is None:
            return Layout.default(self.history_per_room, self.history_max_age,
                                  rooms_stream=self.stream)
        return Layout(self.namespaces, rooms_stream=self.stream)

    def stream_flags(self) -> str:
        """The ``roomcast streams apply`` flags for this node's stream settings."""
        flags = (f"--replicas {self.replicas} --history-per-room {self.history_per_room} "
                 f"--history-max-age {self.history_max_age:g}")
        return flags + (f" --namespaces {self.namespaces_file}" if self.namespaces_file else "")

    @property
    def display_urls(self) -> list[str]:
        """The URLs as they may be logged: without user or password."""
        return redact_urls(self.urls)

    def connect_options(self) -> dict:
        """Credential and TLS options for ``nats.connect``."""
        opts: dict = {}
        if self.user is not None:
            opts["user"] = self.user
        if self.password is not None:
            opts["password"] = self.password
        if self.creds_file:
            text = Path(self.creds_file).read_text()
            if "BEGIN NATS USER JWT" in text:
                opts["user_credentials"] = self.creds_file
            else:
                opts["nkeys_seed"] = self.creds_file
        if self.tls_ca or self.tls_cert:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
            if self.tls_cert:
                ctx.load_cert_chain(self.tls_cert, self.tls_key)
            opts["tls"] = ctx
        return opts

    def __post_init__(self) -> None:
        if not self.urls:
            raise ConfigError("nats_urls", "at least one NATS URL is required")
        if self.password is not None and self.user is None:
            raise ConfigError("nats_password_file", "a NATS password needs --nats-user")
        if self.tls_key and not self.tls_cert:
            raise ConfigError("nats_tls_key", "a TLS key needs --nats-tls-cert")
        for name in ("creds_file", "tls_ca", "tls_cert", "tls_key"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ConfigError(f"nats_{name}", f"no such file: {path}")
        if self.streams_mode not in streams.STREAMS_MODES:
            raise ConfigError("streams", f"must be one of {', '.join(streams.STREAMS_MODES)}")
        if self.replicas not in (1, 3, 5):
            raise ConfigError("replicas", "must be 1, 3 or 5")
        if self.history_per_room < 1:
            raise ConfigError("history_per_room", "must be >= 1")
        if self.duplicate_window <= self.publish_budget:
            raise ConfigError("duplicate_window", "must be longer than publish_budget")
