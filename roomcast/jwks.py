"""Signing keys from a JWKS URL (``--jwt-jwks-url``), for identity providers that rotate keys
(Auth0, Keycloak, Cognito, …).

PyJWT's :class:`jwt.PyJWKClient` fetches and parses the key set; this wraps it for an event
loop and for hostile input: fetches run in a thread, never more than one at a time; a token
whose ``kid`` is unknown triggers a refetch at most every ``min_refetch`` seconds (random
``kid`` values cannot make the node hammer the provider); the set is also refreshed every
``lifespan`` seconds in the background. When the provider is unreachable, the keys already
fetched keep working. A node does not start without a first successful fetch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import jwt

from roomcast.errors import AuthError, ConfigError
from roomcast.logs import redact

log = logging.getLogger("roomcast.jwks")


class JwksKeys:
    def __init__(self, url: str, *, lifespan: float = 300.0, min_refetch: float = 10.0,
                 timeout: float = 5.0) -> None:
        self.url = url
        self.lifespan = lifespan
        self.min_refetch = min_refetch
        # Its own caches and cool-down are off: this class caches (keeping keys while the
        # provider is down, which PyJWT's expiring cache does not) and rate-limits.
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, cache_keys=False,
                                       timeout=timeout, cooldown_duration=0)
        self._keys: dict[str | None, Any] = {}  # kid -> PyJWK
        self._fetched = float("-inf")  # monotonic time of the last fetch attempt
        self._lock = asyncio.Lock()
        self._background: asyncio.Task | None = None
        self.fetches = 0

    async def start(self) -> None:
        """The first fetch. Raises ConfigError (one line) when it fails."""
        try:
            await self._fetch()
        except Exception as exc:  # noqa: BLE001 - one clear line for the operator
            raise ConfigError("jwt_jwks_url", f"cannot read the JWKS at {redact(self.url)}: "
                              f"{redact(str(exc))}") from None
        if not self._keys:
            raise ConfigError("jwt_jwks_url", f"the JWKS at {redact(self.url)} has no "
                              "signing keys")

    async def _fetch(self) -> None:
        self._fetched = time.monotonic()
        self.fetches += 1
        keys = await asyncio.to_thread(self._client.get_signing_keys, True)
        self._keys = {k.key_id: k for k in keys}

    async def refresh(self) -> None:
        """Fetch again unless another fetch ran within ``min_refetch`` seconds."""
        async with self._lock:
            if time.monotonic() - self._fetched < self.min_refetch:
                return
            try:
                await self._fetch()
            except Exception as exc:  # noqa: BLE001 - keep the keys we have
                log.warning("JWKS not refreshed from %s: %s; keeping %d keys",
                            redact(self.url), redact(str(exc)), len(self._keys))

    async def key_for(self, token: str) -> Any:
        """The public key that verifies ``token``, by its ``kid`` header.

        Raises:
            AuthError: malformed header, or a ``kid`` the key set does not have.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        kid = header.get("kid")
        if time.monotonic() - self._fetched > self.lifespan and (
                self._background is None or self._background.done()):
            self._background = asyncio.get_running_loop().create_task(self.refresh())
        key = self._pick(kid)
        if key is None:
            await self.refresh()  # rate-limited: a rotation is seen within min_refetch
            key = self._pick(kid)
        if key is None:
            raise AuthError("token signed with an unknown key (kid)")
        return key.key

    def _pick(self, kid: object) -> Any:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid) if isinstance(kid, str) else None
