"""roomcast.compat: the start-up check of the library internals roomcast relies on."""

from __future__ import annotations

import nats.aio.client
import pytest

from roomcast import compat
from roomcast.cli import main
from roomcast.errors import ConfigError


def test_the_installed_libraries_pass():
    assert compat.problems() == []


@pytest.mark.parametrize("owner,name", [(nats.aio.client.Client, "_process_msg"),
                                        (nats.aio.client.Client, "_flush_pending")])
def test_a_library_without_an_internal_is_refused_with_its_name(monkeypatch, owner, name):
    """An incompatible nats-py: the check names what is missing, and
    `roomcast node` exits 2 with that message before connecting anywhere."""
    for cls in owner.__mro__:
        if name in vars(cls):
            monkeypatch.delattr(cls, name)
    missing = compat.problems()
    assert any(name in m for m in missing), missing
    with pytest.raises(ConfigError) as info:
        compat.check()
    assert name in str(info.value) and "requirements.lock" in str(info.value)
    assert main(["node", "--jwt-key", "k" * 40, "--nats-url", "nats://127.0.0.1:1"]) == 2


def test_a_changed_signature_is_refused(monkeypatch):
    async def _process_msg(self, sid, subject, data):  # a reply parameter gone
        pass

    monkeypatch.setattr(nats.aio.client.Client, "_process_msg", _process_msg)
    assert any("_process_msg" in m and "expected" in m for m in compat.problems())


def test_websockets_headers_without_its_slots_is_refused(monkeypatch):
    from websockets.datastructures import Headers

    monkeypatch.setattr(Headers, "__slots__", ["_list"])
    assert any("websockets" in m and "Headers._dict" in m for m in compat.problems())
