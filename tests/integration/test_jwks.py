"""`--jwt-jwks-url`: keys from a local JWKS HTTP server that rotates them while connections are
open; real nodes on a real JetStream server, real WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
import websockets
from cryptography.hazmat.primitives.asymmetric import rsa

from roomcast.auth import AuthConfig, mint_token
from roomcast.backplane.nats import NatsConfig
from roomcast.config import NodeConfig
from roomcast.errors import ConfigError
from roomcast.node.server import Node
from tests.helpers import UNIT, WsClient, room_name

RESUME_KEY = "resume-" + "k" * 40


class Jwks:
    """A JWKS endpoint on 127.0.0.1 whose key set the test changes; counts fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.fetches = 0
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                jwks.fetches += 1
                body = json.dumps({"keys": [
                    {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(k.public_key())),
                     "kid": kid, "use": "sig", "alg": "RS256"}
                    for kid, k in list(jwks.keys.items())]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def token(self, kid: str, user: str = "ivy", **kw) -> str:
        return mint_token(self.keys[kid], user, algorithm="RS256", kid=kid, **kw)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def jwks():
    j = Jwks()
    yield j
    j.close()


def config(urls, jwks_url: str, **auth_kw) -> NodeConfig:
    return NodeConfig(
        auth=AuthConfig(None, algorithms=("RS256",), jwks_url=jwks_url, **auth_kw),
        nats=NatsConfig(urls=tuple(urls), replicas=1), node_id=f"jwks-{uuid.uuid4().hex[:6]}",
        host="127.0.0.1", port=0, internal_port=0, resume_keys=(RESUME_KEY,))


async def refused(port: int, tok: str) -> str:
    with pytest.raises(websockets.InvalidStatus) as info:
        await websockets.connect(f"ws://127.0.0.1:{port}/ws?token={tok}")
    assert info.value.response.status_code == 401
    return info.value.response.body.decode()


async def test_keys_rotate_while_connections_are_open(nats1, jwks):
    """Old key, then old + new (both work, also for connections opened before), then new only:
    new connections with the old key get 401 once the set was refreshed."""
    jwks.add("k1")
    node = Node(config(nats1.urls, jwks.url, jwks_refresh=1.0, jwks_min_refetch=0.5))
    await node.start()
    try:
        room = room_name()
        old = await WsClient.connect(node.port, jwks.token("k1"))
        await old.join(room)
        jwks.add("k2")  # the provider publishes the next key
        new = await WsClient.connect(node.port, jwks.token("k2", user="jay"))
        await new.join(room)
        again = await WsClient.connect(node.port, jwks.token("k1", user="kim"))
        seq = (await new.publish(room, "both keys work"))["seq"]
        assert (await old.wait_messages(room, 1))[0]["seq"] == seq
        del jwks.keys["k1"]  # the old key is retired
        retired = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        async with asyncio.timeout(20 * UNIT):
            while True:
                reason = await refused(node.port, mint_token(retired, "kim", algorithm="RS256",
                                                             kid="k1"))
                if "unknown key" in reason:
                    break
                await asyncio.sleep(0.2)
        assert not old.closed.done() and not again.closed.done()  # open connections stay
        await WsClient.connect(node.port, jwks.token("k2", user="lee"))
        for c in (old, new, again):
            await c.close()
    finally:
        await node.stop()


async def test_a_token_signed_by_a_removed_key_is_refused(nats1, jwks):
    jwks.add("k1")
    jwks.add("k2")
    node = Node(config(nats1.urls, jwks.url, jwks_refresh=1.0, jwks_min_refetch=0.5))
    await node.start()
    try:
        signed_by_k1 = jwks.token("k1")
        await (await WsClient.connect(node.port, signed_by_k1)).close()
        del jwks.keys["k1"]
        async with asyncio.timeout(20 * UNIT):
            while True:
                try:
                    await (await WsClient.connect(node.port, signed_by_k1)).close()
                except websockets.InvalidStatus as exc:
                    assert exc.response.status_code == 401
                    break
                await asyncio.sleep(0.2)
        assert "unknown key" in await refused(node.port, signed_by_k1)
    finally:
        await node.stop()


async def test_unknown_kids_do_not_hammer_the_provider(nats1, jwks):
    jwks.add("k1")
    node = Node(config(nats1.urls, jwks.url, jwks_min_refetch=30.0))
    await node.start()
    try:
        before = jwks.fetches
        forged = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for i in range(40):
            reason = await refused(node.port, mint_token(forged, "x", algorithm="RS256",
                                                         kid=f"random-{i}"))
            assert "unknown key" in reason
        assert jwks.fetches - before <= 1
        assert "malformed" in await refused(node.port, "not.a.jwt")
    finally:
        await node.stop()


async def test_the_node_does_not_start_without_keys(nats1, jwks):
    dead = Node(config(nats1.urls, "http://127.0.0.1:9/jwks.json"))
    with pytest.raises(ConfigError) as info:
        await dead.start()
    assert "cannot read the JWKS at http://127.0.0.1:9/jwks.json" in str(info.value)
    with pytest.raises(ConfigError):
        AuthConfig(None, algorithms=("HS256",), jwks_url=jwks.url)
