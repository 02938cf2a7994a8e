"""JWT authentication and room permissions (``docs/protocol.md`` §1).

A token names the user (``sub``), must expire (``exp``), and lists the room patterns the user
may subscribe to and publish to in a ``roomcast`` claim::

    {"sub": "alice", "exp": 1767225600,
     "roomcast": {"subscribe": ["lobby", "chat.*"], "publish": ["chat.>"], "info": {...}}}

Patterns use NATS wildcards over the dot-separated room name: ``*`` matches one token,
``>`` matches one or more trailing tokens. A pattern is dot-separated tokens, each a room token
(``A-Z a-z 0-9 _ -``), ``*``, or ``>`` as the last one only; a token with a malformed pattern
is refused (401), never read more widely than written (docs/protocol.md §1).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
import msgspec
from jwt.algorithms import get_default_algorithms

from roomcast.errors import AuthError, ConfigError
from roomcast.jwtfast import HmacFastLane
from roomcast.protocol import valid_room

ALLOWED_ALGORITHMS = frozenset({"HS256", "HS384", "HS512", "RS256", "RS384", "RS512",
                                "ES256", "ES384", "ES512", "EdDSA"})


#: One token of a permission pattern: a room token or ``*``; ``>`` only as the last token.
_PATTERN = re.compile(r"(?:(?:[A-Za-z0-9_\-]+|\*)\.)*(?:[A-Za-z0-9_\-]+|\*|>)")
MAX_PATTERNS = 100
#: Claims every token must carry (``docs/protocol.md`` §1).
REQUIRED_CLAIMS = ("exp", "sub")
MAX_PATTERN_LEN = 200


def pattern_problem(pattern: object) -> str | None:
    """Why ``pattern`` is not a well-formed permission pattern, or None if it is."""
    if not isinstance(pattern, str):
        return "room patterns must be strings"
    if not 0 < len(pattern) <= MAX_PATTERN_LEN:
        return f"room pattern must be 1..{MAX_PATTERN_LEN} characters"
    if _PATTERN.fullmatch(pattern) is None:
        return (f"malformed room pattern {pattern[:40]!r}: dot-separated tokens of "
                "A-Z a-z 0-9 _ -, '*', or '>' as the last token")
    return None


def pattern_matches(pattern: str, room: str) -> bool:
    """NATS-style wildcard match of a well-formed ``pattern`` (:func:`pattern_problem`)
    against ``room``."""
    if pattern == room:
        return True
    p_tokens = pattern.split(".")
    r_tokens = room.split(".")
    for i, p in enumerate(p_tokens):
        if p == ">":
            return len(r_tokens) > i
        if i >= len(r_tokens):
            return False
        if p != "*" and p != r_tokens[i]:
            return False
    return len(p_tokens) == len(r_tokens)


# msgspec Structs, not frozen dataclasses: one Identity is built per handshake, and a frozen
# dataclass costs ~1 µs to construct against ~0.1 µs.


class Permissions(msgspec.Struct, frozen=True):
    """What rooms a user may subscribe to (join) and publish to."""

    subscribe: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()

    def can_subscribe(self, room: str) -> bool:
        return any(pattern_matches(p, room) for p in self.subscribe)

    def can_publish(self, room: str) -> bool:
        return any(pattern_matches(p, room) for p in self.publish)


class Identity(msgspec.Struct, frozen=True):
    """An authenticated user, from a verified token."""

    user: str
    permissions: Permissions
    expires_at: float
    info: dict[str, Any] = {}
    #: rooms the connection is joined to at connect (the ``rooms`` of the claim, §1)
    rooms: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthConfig:
    """How tokens are verified.

    Args:
        key: HMAC secret (HS*) or PEM public key (RS*/ES*/EdDSA).
        algorithms: explicit allow-list; ``none`` is never accepted.
        audience: required ``aud`` when set.
        issuer: required ``iss`` when set.
        leeway: seconds of clock skew tolerated on ``exp``/``nbf``.
    """

    key: str | None
    algorithms: tuple[str, ...] = ("HS256",)
    audience: str | None = None
    issuer: str | None = None
    leeway: float = 5.0
    #: keys come from this JWKS URL (``roomcast/jwks.py``) instead of ``key``
    jwks_url: str | None = None
    #: seconds between background refreshes of the JWKS, and at least between refetches that
    #: an unknown ``kid`` triggers
    jwks_refresh: float = 300.0
    jwks_min_refetch: float = 10.0
    #: what PyJWT verifies with: the parsed public key (or the key text when the listed
    #: algorithms need different key types); set from ``key`` at construction
    verify_key: Any = field(default=None, init=False, repr=False, compare=False)
    #: accept-only HMAC verification in front of PyJWT (``roomcast/jwtfast.py``), or None
    fast_lane: HmacFastLane | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.algorithms:
            raise ConfigError("jwt_algorithms", "at least one algorithm is required")
        bad = [a for a in self.algorithms if a not in ALLOWED_ALGORITHMS]
        if bad:
            raise ConfigError("jwt_algorithms", f"not allowed: {', '.join(bad)}")
        hs = [a.startswith("HS") for a in self.algorithms]
        if any(hs) and not all(hs):
            raise ConfigError("jwt_algorithms", "do not mix HMAC and public-key algorithms")
        if self.jwks_url is not None:
            if any(hs):
                raise ConfigError("jwt_algorithms", "a JWKS holds public keys: list RS*/ES*/"
                                  "EdDSA algorithms (e.g. --jwt-algorithms RS256)")
            if self.key:
                raise ConfigError("jwt_key", "set either a JWT key or a JWKS URL, not both")
            return
        if not self.key:
            raise ConfigError("jwt_key", "a JWT key or secret is required")
        if all(hs) and len(self.key.encode()) < 32:
            raise ConfigError("jwt_key", "an HMAC secret must be at least 32 bytes")
        verify_key: Any = self.key
        if all(hs):
            object.__setattr__(self, "fast_lane", HmacFastLane(
                self.key, self.algorithms, audience=self.audience, issuer=self.issuer,
                leeway=self.leeway, require=REQUIRED_CLAIMS))
        else:
            # Parse the PEM once here, not on every handshake (~60 µs each for RS256/ES256),
            # and refuse to start with a key none of the algorithms can use.
            algorithms = get_default_algorithms()
            loaded = []
            for name in self.algorithms:
                try:
                    loaded.append(algorithms[name].prepare_key(self.key))
                except (jwt.InvalidKeyError, ValueError, TypeError):
                    pass
            if not loaded:
                raise ConfigError("jwt_key", "not a public key usable with "
                                  + ", ".join(self.algorithms))
            if len(loaded) == len(self.algorithms):  # one key type serves all of them
                verify_key = loaded[0]
        object.__setattr__(self, "verify_key", verify_key)


def verify_token(token: str | None, config: AuthConfig, *, key: Any = None) -> Identity:
    """Verify ``token`` and return who it names (with ``key`` instead of the configured one:
    the JWKS key for its ``kid``).

    Raises:
        AuthError: with a reason that is safe to show to the client.
    """
    if not token:
        raise AuthError("missing token")
    lane = config.fast_lane if key is None else None
    claims = lane.decode(token) if lane is not None else None
    if claims is None:  # not the fast lane's kind of token: PyJWT accepts or says why not
        claims = _pyjwt_claims(token, config, key)
    return _identity(claims)


def _pyjwt_claims(token: str, config: AuthConfig, key: Any) -> dict[str, Any]:
    options = {"require": list(REQUIRED_CLAIMS)}
    try:
        return jwt.decode(
            token,
            key if key is not None else config.verify_key,
            algorithms=list(config.algorithms),
            audience=config.audience,
            issuer=config.issuer,
            leeway=config.leeway,
            options=options,
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.ImmatureSignatureError as exc:
        claim = "iat" if "(iat)" in str(exc) else "nbf"
        raise AuthError(f"token not valid yet: '{claim}' is in the future") from None
    except jwt.InvalidIssuedAtError:
        raise AuthError("claim 'iat' must be a number (seconds since the epoch)") from None
    except jwt.InvalidSignatureError:
        raise AuthError("bad token signature") from None
    except jwt.InvalidAlgorithmError:
        raise AuthError("token algorithm not allowed") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(f"token lacks required claim {exc.claim!r}") from None
    except (jwt.InvalidAudienceError, jwt.InvalidIssuerError) as exc:
        raise AuthError(f"token {str(exc).lower()}") from None
    except jwt.InvalidKeyError:
        # A listed algorithm the configured key cannot serve (an RSA token for an EC key).
        raise AuthError("token algorithm does not match the key") from None
    except jwt.PyJWTError:  # InvalidTokenError and the rest
        raise AuthError("malformed token") from None


def _identity(claims: dict[str, Any]) -> Identity:
    for claim in ("exp", "nbf", "iat"):
        # RFC 7519 §2 NumericDate: a JSON number (PyJWT also takes numeric strings).
        value = claims.get(claim)
        if claim in claims and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise AuthError(f"claim {claim!r} must be a number (seconds since the epoch)")
    user = claims.get("sub")
    if not isinstance(user, str) or not 0 < len(user) <= 128 or not user.isprintable():
        raise AuthError("claim 'sub' must be 1..128 printable characters")
    rc = claims.get("roomcast") or {}
    if not isinstance(rc, dict):
        raise AuthError("claim 'roomcast' must be an object")
    info = rc.get("info") or {}
    rooms = _rooms(rc.get("rooms"))
    return Identity(user, _permissions(rc.get("subscribe"), rc.get("publish"), rooms),
                    float(claims["exp"]), info if isinstance(info, dict) else {}, rooms)


#: Permissions already built, by the token's pattern lists and rooms: most tokens of a
#: deployment carry one of a few sets, and checking each pattern on every handshake was
#: ~1.5 µs. Bounded; only lists that passed the checks are kept.
_PERMISSIONS: dict[tuple, Permissions] = {}
PERMISSIONS_KEPT = 1024


def _permissions(subscribe: object, publish: object, rooms: tuple[str, ...]) -> Permissions:
    try:
        key = (tuple(subscribe) if isinstance(subscribe, list) else subscribe,
               tuple(publish) if isinstance(publish, list) else publish, rooms)
        known = _PERMISSIONS.get(key)
    except TypeError:  # an unhashable item: refused by _patterns below
        key = known = None
    if known is not None:
        return known
    # A room the token joins the connection to may be (re-)joined: no pattern needed.
    permissions = Permissions(_patterns(subscribe) + rooms, _patterns(publish))
    if key is not None:
        if len(_PERMISSIONS) >= PERMISSIONS_KEPT:
            _PERMISSIONS.clear()
        _PERMISSIONS[key] = permissions
    return permissions


#: Most rooms a token may join its connection to.
MAX_TOKEN_ROOMS = 20


def _rooms(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AuthError("claim 'roomcast.rooms' must be a list of room names")
    if len(value) > MAX_TOKEN_ROOMS:
        raise AuthError(f"at most {MAX_TOKEN_ROOMS} rooms in claim 'roomcast.rooms'")
    for v in value:
        if not valid_room(v):
            raise AuthError(f"claim 'roomcast.rooms': invalid room name {v[:40]!r}")
    return tuple(dict.fromkeys(value))


def _patterns(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AuthError("room permissions must be lists of strings")
    if len(value) > MAX_PATTERNS:
        raise AuthError(f"at most {MAX_PATTERNS} room patterns per list")
    for v in value:
        if (problem := pattern_problem(v)) is not None:
            raise AuthError(problem)
    return tuple(value)


def mint_token(key: str, user: str, *, subscribe: list[str] | None = None,
               publish: list[str] | None = None, ttl: float = 3600.0,
               algorithm: str = "HS256", audience: str | None = None,
               issuer: str | None = None, info: dict | None = None,
               rooms: list[str] | None = None, now: float | None = None,
               kid: str | None = None) -> str:
    """Create a token (for development and tests; production tokens come from your backend)."""
    issued = int(now if now is not None else time.time())
    rc: dict[str, Any] = {"subscribe": subscribe if subscribe is not None else [">"],
                          "publish": publish if publish is not None else [">"]}
    if info:
        rc["info"] = info
    if rooms:
        rc["rooms"] = rooms
    claims: dict[str, Any] = {"sub": user, "iat": issued, "exp": int(issued + ttl), "roomcast": rc}
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    return jwt.encode(claims, key, algorithm=algorithm,
                      headers={"kid": kid} if kid is not None else None)
