"""A fast lane in front of PyJWT for the common token: HMAC-signed, compact, plain header.

PyJWT stays the authority. :class:`HmacFastLane` either returns the claims of a token that
PyJWT would accept with the same result, or ``None``, and then the caller asks PyJWT, which
accepts or refuses with its own reasons. The lane takes only tokens whose every part it can
judge with certainty: exactly three unpadded canonical base64url segments, a header of
``alg`` (one of the configured HS* algorithms), ``typ`` and ``kid`` (strings) only, a valid
HMAC, a JSON object payload whose registered claims have the plain types; anything else
(padding, ``crit``, ``b64``, odd claim types, an ``aud`` that needs PyJWT's rules, a bad
signature, an expired token) goes to PyJWT.

Why (docs/performance.md, "The cost of a connect"): PyJWT's generic path checks every
character of each segment in a Python generator, re-encodes each segment, re-examines the
HMAC key for PEM/DER/SSH shapes on every call and validates claims through datetime; under
a connect storm it was about a quarter of an edge node's Python time per connection, for a
2 µs HMAC. The differential property test (``tests/unit/test_jwt_fast_lane.py``) holds the
lane to PyJWT's answer on random and hostile tokens; the PyJWT version it was checked with is
pinned in ``requirements.lock``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import time
from typing import Any

import jwt
import msgspec
from jwt.algorithms import get_default_algorithms

_DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_HEADER_KEYS = frozenset({"alg", "typ", "kid"})
_DATES = ("exp", "nbf", "iat")
#: Distinct header segments whose verdict is remembered.
HEADERS_KEPT = 16


_URL_TO_STD = bytes.maketrans(b"-_", b"+/")
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: Each base64url character's 6-bit value.
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}


def _segment(text: str) -> bytes | None:
    """Unpadded canonical base64url, or None (PyJWT decides)."""
    spare = len(text) % 4
    if spare == 1 or _SEGMENT.fullmatch(text) is None:
        return None
    # Canonical: the bits of the last character that carry no data are zero (2 characters
    # left over carry 8 bits of 12, 3 carry 16 of 18).
    if spare and _VALUE[text[-1]] & (0x0F if spare == 2 else 0x03):
        return None
    try:
        return binascii.a2b_base64(text.encode().translate(_URL_TO_STD) + b"=" * (-spare % 4))
    except (binascii.Error, ValueError):
        return None


def _loads(raw: bytes) -> Any:
    """``json.loads(raw)`` — PyJWT's parser — read by msgspec when it can (~4x faster).
    Where both accept a document they give the same value; what msgspec refuses and
    ``json.loads`` takes (``NaN``, ``1e400``, lone surrogates, a byte-order mark, UTF-16)
    goes to ``json.loads`` (property-tested: tests/unit/test_jwt_fast_lane.py)."""
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return json.loads(raw)


class HmacFastLane:
    """Accept-only verification of HS256/384/512 tokens for one secret.

    Args:
        key: the HMAC secret, as configured.
        algorithms: the allowed algorithms (all HS*).
        audience, issuer, leeway: as given to ``jwt.decode``.
        require: claims that must be present and not null (``jwt.decode``'s ``require``).
    """

    def __init__(self, key: str, algorithms: tuple[str, ...], *, audience: str | None,
                 issuer: str | None, leeway: float, require: tuple[str, ...]) -> None:
        self._digests = {a: _DIGESTS[a] for a in algorithms if a in _DIGESTS}
        if len(self._digests) != len(algorithms):
            raise ValueError("the fast lane serves HMAC algorithms only")
        # What PyJWT would sign with; a secret PyJWT refuses (PEM- or SSH-shaped) gets no lane.
        self._key: bytes | None = None
        try:
            self._key = get_default_algorithms()["HS256"].prepare_key(key)
        except jwt.InvalidKeyError:
            pass
        #: digest -> an HMAC keyed with the secret, copied per token
        self._macs = ({d: hmac.new(self._key, digestmod=d) for d in self._digests.values()}
                      if self._key is not None else {})
        self._audience = audience
        self._issuer = issuer
        self._leeway = float(leeway)
        self._require = require
        self._headers: dict[str, Any] = {}  # header segment -> its digest (judged already)

    def decode(self, token: object) -> dict[str, Any] | None:
        """The token's claims if PyJWT would accept it (same claims), else None."""
        if self._key is None or not isinstance(token, str):
            return None
        parts = token.split(".")
        if len(parts) != 3:
            return None
        digest = self._headers.get(parts[0])
        if digest is None:
            digest = self._header_digest(parts[0])
            if digest is None:
                return None
        payload_raw = _segment(parts[1])
        if payload_raw is None:
            return None
        signed = token[:len(parts[0]) + 1 + len(parts[1])].encode()
        # The signature segment must be the canonical unpadded base64url of the HMAC: compared
        # encoded, which is the same test as decoding it canonically and comparing bytes.
        mac = self._macs[digest].copy()  # keyed once (hmac.new per token: ~0.4 µs more)
        mac.update(signed)
        expected = base64.urlsafe_b64encode(mac.digest()).rstrip(b"=")
        if not hmac.compare_digest(parts[2].encode(), expected):
            return None
        try:
            claims = _loads(payload_raw)
        except (ValueError, RecursionError):
            return None
        if type(claims) is not dict or not self._claims_ok(claims):
            return None
        return claims

    def _header_digest(self, segment: str):
        """The digest a header segment names, if the lane can judge the header (else None);
        remembered for the next tokens, which nearly always carry the same header (at most
        ``HEADERS_KEPT`` of them: distinct ``kid`` values cannot grow it without bound)."""
        raw = _segment(segment)
        if raw is None:
            return None
        try:
            header = json.loads(raw)
        except (ValueError, RecursionError):
            return None
        if type(header) is not dict or not header.keys() <= _HEADER_KEYS:
            return None
        alg = header.get("alg")
        digest = self._digests.get(alg) if type(alg) is str else None
        if digest is None:
            return None
        for name in ("typ", "kid"):
            if name in header and type(header[name]) is not str:
                return None
        if len(self._headers) < HEADERS_KEPT:
            self._headers[segment] = digest
        return digest

    def _claims_ok(self, claims: dict[str, Any]) -> bool:
        for name in self._require:
            if claims.get(name) is None:
                return False
        now = time.time()
        leeway = self._leeway
        for name in _DATES:
            if name in claims:
                value = claims[name]
                # int() of a float truncates, as PyJWT does; bools, NaN, infinities and the
                # rest go to PyJWT.
                kind = type(value)
                if kind is not int and (kind is not float or not math.isfinite(value)):
                    return False
                whole = int(value)
                if name == "exp" and whole <= now - leeway:
                    return False
                if name != "exp" and whole > now + leeway:
                    return False
        if "sub" in claims and type(claims["sub"]) is not str:
            return False
        if "jti" in claims and type(claims["jti"]) is not str:
            return False
        aud = claims.get("aud")
        if self._audience is None:
            if aud:
                return False  # PyJWT refuses an audience nobody asked for
        elif not (aud == self._audience and type(aud) is str):
            return False  # lists and mismatches: PyJWT's rules
        if self._issuer is not None:
            iss = claims.get("iss")
            if type(iss) is not str or iss != self._issuer:
                return False
        return True
