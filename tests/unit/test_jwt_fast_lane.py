"""roomcast.jwtfast: the HMAC fast lane accepts only what PyJWT accepts, with the same claims.

The property: for any token and configuration, ``HmacFastLane.decode`` returns either None
(PyJWT decides) or exactly the claims ``jwt.decode`` returns for it. Tokens are drawn from
honest ones and hostile variations (other algorithms, extra and mistyped header fields,
padding, non-canonical base64, tampered signatures, odd claim types and values, audiences and
issuers). A second property keeps the lane from being vacuous: plain valid tokens take it.
"""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roomcast.auth import REQUIRED_CLAIMS, AuthConfig, mint_token, verify_token
from roomcast.jwtfast import HmacFastLane

KEY = "k" * 64
OTHER = "o" * 64


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _sign(header: dict, claims: object, key: str, alg: str) -> str:
    import hashlib
    import hmac
    signing = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384,
              "HS512": hashlib.sha512}.get(alg, hashlib.sha256)
    return f"{signing}.{_b64(hmac.new(key.encode(), signing.encode(), digest).digest())}"


def _pyjwt(token: str, algorithms, audience, issuer, leeway):
    try:
        return jwt.decode(token, KEY, algorithms=list(algorithms), audience=audience,
                          issuer=issuer, leeway=leeway,
                          options={"require": list(REQUIRED_CLAIMS)})
    except jwt.PyJWTError:
        return None


# Times well away from "now" (PyJWT and the lane read the clock microseconds apart).
_offset = st.sampled_from([-10**6, -3600, -30, -12, 12, 30, 3600, 10**6])
_date = st.one_of(
    _offset.map(lambda o: int(time.time()) + o),
    _offset.map(lambda o: time.time() + o + 0.5),
    st.sampled_from([True, False, None, "123", [], {}, float("nan"), float("inf"), 10**30]),
)
_text = st.text(max_size=8)
_json = st.recursive(st.none() | st.booleans() | st.integers() | _text,
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(_text, c, max_size=3),
                     max_leaves=6)


@st.composite
def _claims(draw):
    """Mostly a valid claim set with one or two fields drawn hostile: each check of the lane
    gets tokens that pass all the others."""
    claims: dict = {"sub": "u", "exp": int(time.time()) + 3600}
    for name in draw(st.lists(st.sampled_from(["exp", "nbf", "iat", "sub", "aud", "iss", "jti",
                                               "roomcast", "-exp", "-sub"]), max_size=2)):
        if name in ("exp", "nbf", "iat"):
            claims[name] = draw(_date)
        elif name == "sub":
            claims[name] = draw(st.one_of(_text, st.integers(), st.none()))
        elif name == "aud":
            claims[name] = draw(st.one_of(st.sampled_from(["rc", "other", "", [], 0]),
                                          st.lists(st.sampled_from(["rc", "x", 1]), max_size=3)))
        elif name == "iss":
            claims[name] = draw(st.sampled_from(["me", "evil", 5, None]))
        elif name == "jti":
            claims[name] = draw(st.one_of(_text, st.integers()))
        elif name == "roomcast":
            claims[name] = draw(_json)
        else:
            claims.pop(name[1:], None)
    return claims


@st.composite
def _header(draw, algorithms):
    """Mostly a header the lane takes, now and then with a hostile field."""
    header: dict = {"alg": draw(st.sampled_from(algorithms))}
    if draw(st.booleans()):
        header["typ"] = "JWT"
    if draw(st.booleans()):
        header["kid"] = "k1"
    for change in draw(st.lists(st.integers(0, 5), max_size=1)):
        if change == 0:
            header["alg"] = draw(st.sampled_from(["HS256", "HS384", "HS512", "none", "RS256",
                                                  "hs256", "", None, ["HS256"]]))
        elif change == 1:
            header["typ"] = draw(st.one_of(st.integers(), st.none(), _text))
        elif change == 2:
            header["kid"] = draw(st.one_of(_text, st.integers(), st.none()))
        elif change == 3:
            header[draw(st.sampled_from(["crit", "b64", "jku", "x5u"]))] = draw(_json)
        elif change == 4:
            del header["alg"]
        else:
            return draw(_json)
    return header


def _mangle(token: str, how: int, where: int) -> str:
    """Variation ``how`` (1-6) of segment ``where``; other values leave the token alone."""
    parts = token.split(".")
    i = where % 3
    if how == 1:  # padding
        parts[i] += "=" * (-len(parts[i]) % 4 or 4)
    elif how == 2 and parts[i]:  # flip the last character (tampering / spare bits)
        last = parts[i][-1]
        parts[i] = parts[i][:-1] + ("A" if last != "A" else "B")
    elif how == 3:  # a character outside the alphabet
        parts[i] = parts[i][:1] + "+" + parts[i][1:]
    elif how == 4:  # an extra segment
        parts.append("e30")
    elif how == 5:  # drop a segment
        parts.pop(i)
    elif how == 6:  # non-ASCII
        parts[i] += "é"
    return ".".join(parts)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(),
       algorithms=st.sampled_from([("HS256",), ("HS256", "HS384", "HS512"), ("HS512",)]),
       key=st.sampled_from([KEY, KEY, KEY, OTHER]),
       audience=st.sampled_from([None, None, "rc"]), issuer=st.sampled_from([None, None, "me"]),
       leeway=st.sampled_from([0, 5, 20]), how=st.integers(0, 15), where=st.integers(0, 2))
def test_lane_never_accepts_what_pyjwt_refuses(data, algorithms, key, audience, issuer, leeway,
                                               how, where):
    header = data.draw(_header(algorithms))
    claims = data.draw(st.one_of(_claims(), _claims(), _claims(), _json))
    if isinstance(claims, dict) and data.draw(st.booleans()):
        # the configured audience and issuer, as honest tokens carry them
        claims.update({k: v for k, v in (("aud", audience), ("iss", issuer)) if v})
    alg = header.get("alg") if isinstance(header, dict) else None
    token = _mangle(_sign(header, claims, key, alg if isinstance(alg, str) else "HS256"), how,
                    where)
    # One lane per configuration for the whole run: the header verdicts it remembers from
    # earlier examples must not change any later answer.
    config = (algorithms, audience, issuer, leeway)
    lane = _LANES.get(config)
    if lane is None:
        lane = _LANES[config] = HmacFastLane(KEY, algorithms, audience=audience, issuer=issuer,
                                             leeway=leeway, require=REQUIRED_CLAIMS)
    fast = lane.decode(token)
    if fast is not None:
        assert fast == _pyjwt(token, algorithms, audience, issuer, leeway)


_LANES: dict[tuple, HmacFastLane] = {}


def test_remembered_headers_are_bounded_and_still_need_the_signature():
    """Distinct ``kid`` values cannot grow the lane's memory; a remembered header does not
    let a token with a wrong signature through."""
    from roomcast.jwtfast import HEADERS_KEPT

    lane = HmacFastLane(KEY, ("HS256",), audience=None, issuer=None, leeway=5,
                        require=REQUIRED_CLAIMS)
    for i in range(HEADERS_KEPT * 4):
        assert lane.decode(mint_token(KEY, f"u{i}", kid=f"kid-{i}")) is not None
    assert len(lane._headers) == HEADERS_KEPT
    good = mint_token(KEY, "mallory", kid="kid-0")
    forged = mint_token(OTHER, "mallory", kid="kid-0")
    assert good.split(".")[0] == forged.split(".")[0] and good.split(".")[0] in lane._headers
    assert lane.decode(good) is not None and lane.decode(forged) is None


@settings(max_examples=300, deadline=None)
@given(user=st.text(min_size=1, max_size=20), alg=st.sampled_from(["HS256", "HS384", "HS512"]),
       audience=st.sampled_from([None, "rc"]), issuer=st.sampled_from([None, "me"]),
       kid=st.sampled_from([None, "k1"]), info=st.dictionaries(_text, _json, max_size=3))
def test_plain_valid_tokens_take_the_lane(user, alg, audience, issuer, kid, info):
    """Honest tokens as a backend mints them: the lane answers, and agrees with PyJWT."""
    token = mint_token(KEY, user, algorithm=alg, audience=audience, issuer=issuer, kid=kid,
                       info=info)
    lane = HmacFastLane(KEY, ("HS256", "HS384", "HS512"), audience=audience, issuer=issuer,
                        leeway=5, require=REQUIRED_CLAIMS)
    fast = lane.decode(token)
    assert fast is not None
    assert fast == _pyjwt(token, ("HS256", "HS384", "HS512"), audience, issuer, 5)


def test_verify_token_uses_the_lane_and_pyjwt_keeps_the_reasons():
    """verify_token answers valid tokens from the lane; refusals keep PyJWT's reasons."""
    cfg = AuthConfig(KEY)
    assert cfg.fast_lane is not None
    token = mint_token(KEY, "alice")
    assert cfg.fast_lane.decode(token) is not None
    assert verify_token(token, cfg).user == "alice"
    from roomcast.errors import AuthError
    for bad, reason in [(mint_token(OTHER, "alice"), "bad token signature"),
                        (mint_token(KEY, "alice", ttl=-60), "token expired"),
                        (mint_token(KEY, "alice", algorithm="HS512"), "token algorithm not allowed")]:
        assert cfg.fast_lane.decode(bad) is None
        with pytest.raises(AuthError, match=reason):
            verify_token(bad, cfg)


def test_no_lane_for_public_keys_or_pem_shaped_secrets():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    pub = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    assert AuthConfig(pub, algorithms=("ES256",)).fast_lane is None
    lane = HmacFastLane(pub, ("HS256",), audience=None, issuer=None, leeway=5,
                        require=REQUIRED_CLAIMS)
    assert lane.decode(_sign({"alg": "HS256"}, {"sub": "a", "exp": time.time() + 60}, pub,
                             "HS256")) is None


def _valid(now: int) -> dict:
    return {"sub": "u", "exp": now + 3600}


# Claims are built from the clock when each case runs (a case collected minutes before it
# runs must not see its "future" nbf become the past).


@pytest.mark.parametrize("header,claims,config", [
    ({"alg": "HS256"}, lambda now: {**_valid(now), "aud": "other"}, {}),
    ({"alg": "HS256"}, lambda now: {**_valid(now), "aud": ["rc", "x"]}, {"audience": "rc"}),
    ({"alg": "HS256"}, lambda now: {**_valid(now), "aud": "other"}, {"audience": "rc"}),
    ({"alg": "HS256"}, lambda now: _valid(now), {"audience": "rc"}),
    ({"alg": "HS256"}, lambda now: {**_valid(now), "iss": "evil"}, {"issuer": "me"}),
    ({"alg": "HS256"}, lambda now: _valid(now), {"issuer": "me"}),
    ({"alg": "HS256"}, lambda now: {**_valid(now), "jti": 5}, {}),
    ({"alg": "HS256"}, lambda now: {**_valid(now), "sub": 5}, {}),
    ({"alg": "HS256"}, lambda now: {"exp": now + 3600}, {}),
    ({"alg": "HS256"}, lambda now: {"sub": "u"}, {}),
    ({"alg": "HS256"}, lambda now: {**_valid(now), "exp": str(now + 3600)}, {}),
    ({"alg": "HS256"}, lambda now: {**_valid(now), "exp": True}, {}),
    ({"alg": "HS256"}, lambda now: {**_valid(now), "exp": now - 60}, {}),
    ({"alg": "HS256"}, lambda now: {**_valid(now), "nbf": now + 60}, {}),
    ({"alg": "HS256"}, lambda now: {**_valid(now), "iat": now + 60}, {}),
    ({"alg": "HS256"}, lambda now: {**_valid(now), "nbf": "soon"}, {}),
    ({"alg": "HS256", "typ": 1}, lambda now: _valid(now), {}),
    ({"alg": "HS256", "kid": 1}, lambda now: _valid(now), {}),
    ({"alg": "HS256", "crit": ["b64"], "b64": False}, lambda now: _valid(now), {}),
    ({"alg": "HS512"}, lambda now: _valid(now), {}),
    ({"alg": "none"}, lambda now: _valid(now), {}),
    ({}, lambda now: _valid(now), {}),
    ({"alg": "HS256"}, lambda now: ["not", "an", "object"], {}),
])
def test_each_deviation_goes_to_pyjwt(header, claims, config):
    """One deviation from a valid token at a time: the lane leaves it to PyJWT.

    (Some of these PyJWT accepts, e.g. a numeric-string ``exp``; the lane need not.)"""
    now = int(time.time())
    claims = claims(now)
    lane = HmacFastLane(KEY, ("HS256",), audience=config.get("audience"),
                        issuer=config.get("issuer"), leeway=5, require=REQUIRED_CLAIMS)
    honest = {**_valid(now), **{c: config[k] for k, c in (("audience", "aud"), ("issuer", "iss"))
                           if k in config}}
    assert lane.decode(_sign({"alg": "HS256"}, honest, KEY, "HS256")) is not None
    assert lane.decode(_sign(header, claims, KEY, header.get("alg") or "HS256")) is None


@pytest.mark.parametrize("how", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("where", [0, 1, 2])
def test_each_mangled_form_goes_to_pyjwt(how, where):
    lane = HmacFastLane(KEY, ("HS256",), audience=None, issuer=None, leeway=5,
                        require=REQUIRED_CLAIMS)
    token = _sign({"alg": "HS256"}, _valid(int(time.time())), KEY, "HS256")
    assert lane.decode(_mangle(token, how, where)) is None


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                 max_size=4),
    max_leaves=12)
_json_noise = st.sampled_from(['{"a":1,"a":2}', "NaN", "1e400", '"\\ud800"', "\ufeff{}", " {} ",
                               "{}x", '{"a":', "-0", "1.0e-400", "[1,]", "\u2028"])


def _outcome(f, raw: bytes):
    try:
        return repr(f(raw))
    except (ValueError, RecursionError):
        return "refused"


@settings(max_examples=2000)
@given(st.one_of(_json_values.map(lambda v: json.dumps(v).encode()),
                 st.tuples(_json_noise, _json_values).map(
                     lambda t: (t[0] + json.dumps(t[1])).encode()),
                 st.text().map(lambda s: s.encode("utf-8", "surrogatepass")),
                 st.binary(max_size=40),
                 _json_values.map(lambda v: json.dumps(v).encode("utf-16"))))
def test_claims_parse_as_pyjwts_json_loads(raw: bytes) -> None:
    from roomcast.jwtfast import _loads

    assert _outcome(_loads, raw) == _outcome(json.loads, raw)
