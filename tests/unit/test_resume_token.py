"""roomcast.resume: signing, expiry, owner binding, tampering, key rotation."""

from __future__ import annotations

import pytest

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
