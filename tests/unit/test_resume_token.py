"""roomcast.resume: signing, expiry, owner binding, tampering, key rotation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomcast.errors import ConfigError
from roomcast.resume import ResumeSigner, ResumeTokenError

K1, K2 = "a" * 32, "b" * 32


def test_round_trip():
    """A token verifies for its owner and names rooms, epoch and connection."""
    s = ResumeSigner([K1], ttl=60)
    claims = s.verify(s.issue("alice", {"b", "a"}, "ep", "n1.7", now=1000), "alice", now=1030)
    assert (claims.user, claims.rooms, claims.epoch, claims.conn) == ("alice", ("a", "b"), "ep",
                                                                      "n1.7")
    assert claims.expires_at == 1060


@pytest.mark.parametrize("mutate,reason", [
    (lambda t: t, "resume token belongs to another user"),
    (lambda t: t[:-3] + ("AAA" if not t.endswith("AAA") else "BBB"), "resume token invalid"),
    (lambda t: "v2" + t[2:], "resume token invalid"),
    (lambda t: "garbage", "resume token invalid"),
    (lambda t: t.replace(".", "", 1), "resume token invalid"),
])
def test_refusals(mutate, reason):
    """Wrong owner, tampered signature or malformed tokens are refused with a reason."""
    s = ResumeSigner([K1])
    token = s.issue("alice", ["r"], "e", "c")
    with pytest.raises(ResumeTokenError) as info:
        s.verify(mutate(token), "alice" if "invalid" in reason else "bob")
    assert info.value.reason == reason


def test_tampered_payload_is_refused():
    """Changing the payload (e.g. the user) breaks the signature."""
    s = ResumeSigner([K1])
    v, kid, payload, sig = s.issue("alice", ["r"], "e", "c").split(".")
    other = ResumeSigner([K1]).issue("mallory", ["r"], "e", "c").split(".")[2]
    with pytest.raises(ResumeTokenError, match="invalid"):
        s.verify(f"{v}.{kid}.{other}.{sig}", "mallory")


def test_expiry():
    s = ResumeSigner([K1], ttl=10)
    token = s.issue("alice", [], "e", "c", now=100)
    s.verify(token, "alice", now=109)
    with pytest.raises(ResumeTokenError, match="expired"):
        s.verify(token, "alice", now=111)


def test_rotation():
    """A signer listing (new, old) accepts old tokens and signs with the new key."""
    old = ResumeSigner([K1])
    rotated = ResumeSigner([K2, K1])
    assert rotated.verify(old.issue("u", [], "e", "c"), "u").user == "u"
    new_token = rotated.issue("u", [], "e", "c")
    with pytest.raises(ResumeTokenError):
        old.verify(new_token, "u")
    with pytest.raises(ResumeTokenError):
        ResumeSigner([K2]).verify(old.issue("u", [], "e", "c"), "u")


@pytest.mark.parametrize("keys,ttl", [([], 1), (["short"], 1), ([K1], 0)])
def test_config_validation(keys, ttl):
    with pytest.raises(ConfigError):
        ResumeSigner(keys, ttl=ttl)


@given(st.text(min_size=1, max_size=30), st.sets(st.text(max_size=8), max_size=4),
       st.floats(0, 2e9))
def test_tokens_are_exactly_the_documented_format(user, rooms, now):
    """v1.<key id>.<payload>.<signature>, base64url without padding, HMAC-SHA256 of the first
    three parts (docs/protocol.md §7), built here from the standard library alone."""
    import base64
    import hashlib
    import hmac

    import msgspec

    key = "k" * 40
    token = ResumeSigner([key], ttl=300).issue(user, rooms, "ep", "n1.7", now=now)

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    kid = b64(hashlib.sha256(key.encode()).digest()[:6])
    payload = b64(msgspec.json.encode({"u": user, "r": sorted(rooms), "e": "ep", "c": "n1.7",
                                       "x": round(now + 300, 3)}))
    signed = f"v1.{kid}.{payload}"
    sig = b64(hmac.new(key.encode(), signed.encode(), hashlib.sha256).digest())
    assert token == f"{signed}.{sig}"
