"""roomcast.auth: token verification and room permission patterns."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.auth import (
    AuthConfig,
    Permissions,
    mint_token,
    pattern_matches,
    pattern_problem,
    verify_token,
)
from roomcast.errors import AuthError, ConfigError

KEY = "k" * 40
CFG = AuthConfig(KEY)


@pytest.mark.parametrize("pattern,room,ok", [
    ("lobby", "lobby", True), ("lobby", "lobby2", False), ("chat.*", "chat.a", True),
    ("chat.*", "chat.a.b", False), ("chat.*", "chat", False), ("chat.>", "chat.a.b", True),
    ("chat.>", "chat", False), (">", "anything.at.all", True), ("*.x", "a.x", True),
    ("*.x", "a.y", False),
])
def test_patterns(pattern, room, ok):
    """NATS-style wildcards: * is one token, > is one or more trailing tokens."""
    assert pattern_matches(pattern, room) is ok


def test_valid_token_gives_identity():
    """A good token yields user, permissions and info."""
    tok = mint_token(KEY, "alice", subscribe=["a.*"], publish=["a.x"], info={"n": 1})
    ident = verify_token(tok, CFG)
    assert ident.user == "alice" and ident.info == {"n": 1}
    assert ident.permissions == Permissions(("a.*",), ("a.x",))
    assert ident.permissions.can_subscribe("a.b") and not ident.permissions.can_publish("a.b")


def _unsigned(claims: dict) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    return f"{enc({'alg': 'none', 'typ': 'JWT'})}.{enc(claims)}."


@pytest.mark.parametrize("make,reason", [
    (lambda: None, "missing token"),
    (lambda: "", "missing token"),
    (lambda: "abc.def", "malformed token"),
    (lambda: mint_token("z" * 40, "alice"), "bad token signature"),
    (lambda: mint_token(KEY, "alice", ttl=-60), "token expired"),
    (lambda: _unsigned({"sub": "alice", "exp": time.time() + 60}), "token algorithm not allowed"),
    (lambda: jwt.encode({"sub": "alice"}, KEY, algorithm="HS256"), "token lacks required claim 'exp'"),
    (lambda: jwt.encode({"exp": time.time() + 60}, KEY, algorithm="HS256"),
     "token lacks required claim 'sub'"),
    (lambda: jwt.encode({"sub": "a", "exp": time.time() + 60}, KEY * 2, algorithm="HS512"),
     "token algorithm not allowed"),
    (lambda: jwt.encode({"sub": "a\n", "exp": time.time() + 60}, KEY, algorithm="HS256"),
     "claim 'sub' must be 1..128 printable characters"),
])
def test_refused_tokens_have_reasons(make, reason):
    """Every refusal says why, in words safe to send to the client."""
    with pytest.raises(AuthError) as info:
        verify_token(make(), CFG)
    assert info.value.reason == reason


def test_audience_and_issuer_are_enforced():
    """aud/iss are checked when configured."""
    cfg = AuthConfig(KEY, audience="rc", issuer="me")
    assert verify_token(mint_token(KEY, "a", audience="rc", issuer="me"), cfg).user == "a"
    with pytest.raises(AuthError):
        verify_token(mint_token(KEY, "a", audience="other", issuer="me"), cfg)
    with pytest.raises(AuthError):
        verify_token(mint_token(KEY, "a", audience="rc", issuer="evil"), cfg)


def test_public_key_tokens():
    """ES256 tokens verify against the public key only."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    priv = ec.generate_private_key(ec.SECP256R1())
    pub = priv.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    tok = jwt.encode({"sub": "e", "exp": time.time() + 60}, priv, algorithm="ES256")
    assert verify_token(tok, AuthConfig(pub, algorithms=("ES256",))).user == "e"
    # An EC key listed with RSA algorithms too: ES256 tokens still verify, an RS256 token is
    # refused with an AuthError (not an exception from the key type).
    both = AuthConfig(pub, algorithms=("ES256", "RS256"))
    assert verify_token(tok, both).user == "e"
    from cryptography.hazmat.primitives.asymmetric import rsa

    rs = jwt.encode({"sub": "e", "exp": time.time() + 60}, rsa.generate_private_key(65537, 2048),
                    algorithm="RS256")
    with pytest.raises(AuthError):
        verify_token(rs, both)
    other = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode({"sub": "e", "exp": time.time() + 60}, other, algorithm="ES256")
    with pytest.raises(AuthError, match="bad token signature"):
        verify_token(forged, AuthConfig(pub, algorithms=("ES256",)))


@pytest.mark.parametrize("kw,field", [
    ({"key": ""}, "jwt_key"), ({"key": "short"}, "jwt_key"),
    ({"key": KEY, "algorithms": ()}, "jwt_algorithms"),
    ({"key": KEY, "algorithms": ("none",)}, "jwt_algorithms"),
    ({"key": KEY, "algorithms": ("HS256", "RS256")}, "jwt_algorithms"),
    ({"key": "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n",
      "algorithms": ("RS256",)}, "jwt_key"),
    ({"key": KEY, "algorithms": ("ES256",)}, "jwt_key"),
])
def test_auth_config_validation(kw, field):
    """Bad auth settings fail at start-up, naming the setting."""
    with pytest.raises(ConfigError) as info:
        AuthConfig(**kw)
    assert info.value.field == field


@pytest.mark.parametrize("pattern", [
    "a.>.b", ">.x", "a.>.>", "a..b", ".a", "a.", "", "a b", "a\n", "a.*\n", "a*", "a>", "*a",
    "x" * 201, "ünï",
])
def test_malformed_patterns_refuse_the_token(pattern):
    """A token with a malformed pattern gets 401 with a reason (no pattern is read more
    widely than written: `a.>.b` must not allow `a.zzz`, `>.x` must not allow everything)."""
    for field in ("subscribe", "publish"):
        tok = mint_token(KEY, "u", **{field: ["ok.*", pattern]})
        with pytest.raises(AuthError) as info:
            verify_token(tok, CFG)
        assert "pattern" in info.value.reason


def _claims_token(**claims) -> str:
    return jwt.encode({"sub": "u", "exp": time.time() + 100, **claims}, KEY)


@pytest.mark.parametrize("claims,reason", [
    ({"exp": str(int(time.time()) + 10**7)}, "claim 'exp' must be a number"),
    ({"nbf": str(int(time.time()) - 10)}, "claim 'nbf' must be a number"),
    ({"iat": time.time() + 10**7}, "token not valid yet: 'iat' is in the future"),
    ({"nbf": time.time() + 10**7}, "token not valid yet: 'nbf' is in the future"),
    ({"iat": "x"}, "claim 'iat' must be a number"),
])
def test_numeric_dates_must_be_numbers_and_future_ones_say_so(claims, reason):
    """RFC 7519 NumericDate: exp/nbf/iat are JSON numbers; a future iat/nbf says what is
    wrong instead of "malformed token"."""
    with pytest.raises(AuthError) as info:
        verify_token(_claims_token(**claims), CFG)
    assert info.value.reason.startswith(reason), info.value.reason


def nats_match(pattern: str, subject: str) -> bool:
    """NATS's subject-matching rules (nats-server `matchLiteral`), as a reference: tokens
    compared one by one, `*` any one token, `>` (last token only) one or more tokens."""
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


pattern_tokens = st.sampled_from(["a", "b", "ab", "*", ">", "a-b", "_"])
room_tokens = st.sampled_from(["a", "b", "ab", "a-b", "_", "c"])


@settings(max_examples=1000, deadline=None)
@given(st.lists(pattern_tokens, min_size=1, max_size=5).map(".".join),
       st.lists(room_tokens, min_size=1, max_size=5).map(".".join))
def test_matcher_agrees_with_nats_on_every_well_formed_pattern(pattern, room):
    """Well-formed patterns match exactly what NATS would match; malformed ones are refused
    before they reach the matcher."""
    if pattern_problem(pattern) is not None:
        assert ">" in pattern.split(".")[:-1]  # the only malformation these tokens can make
        return
    assert pattern_matches(pattern, room) == nats_match(pattern, room)


def _with_lists(subscribe, publish="keep", rooms=None) -> str:
    claims = {"sub": "u", "exp": time.time() + 60,
              "roomcast": {"subscribe": subscribe, "publish": [">"] if publish == "keep" else publish}}
    if rooms is not None:
        claims["roomcast"]["rooms"] = rooms
    return jwt.encode(claims, KEY, algorithm="HS256")


def test_permissions_are_built_once_per_set_of_lists_and_bad_lists_never_kept():
    a = verify_token(_with_lists(["chat.*", "lobby"]), CFG).permissions
    b = verify_token(_with_lists(["chat.*", "lobby"]), CFG).permissions
    assert a is b and a == Permissions(("chat.*", "lobby"), (">",))
    # Other lists, other rooms, or the same patterns moved between the lists: other answers.
    assert verify_token(_with_lists(["chat.*"]), CFG).permissions.subscribe == ("chat.*",)
    with_room = verify_token(_with_lists(["chat.*", "lobby"], rooms=["r1"]), CFG).permissions
    assert with_room.subscribe == ("chat.*", "lobby", "r1")
    swapped = verify_token(_with_lists([">"], ["chat.*", "lobby"]), CFG).permissions
    assert swapped == Permissions((">",), ("chat.*", "lobby"))
    # Refused every time, whether the items are bad strings or not hashable at all.
    for bad in (["chat..x"], [["nested"]], [{"a": 1}], "lobby", [1]):
        for _ in range(2):
            with pytest.raises(AuthError):
                verify_token(_with_lists(bad), CFG)
