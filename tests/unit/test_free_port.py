"""roomcast.natsserver.free_port: ports for servers to listen on come from below the kernel's
ephemeral range, where no outgoing connection can be given them meanwhile."""

from __future__ import annotations

import socket

from roomcast.natsserver import LISTEN_PORTS_FROM, _ephemeral_range, free_port


def test_ports_are_below_the_ephemeral_range_and_free():
    low, high = _ephemeral_range()
    assert low <= high
    ports = {free_port() for _ in range(20)}
    assert len(ports) > 1  # not one fixed number
    for port in ports:
        assert LISTEN_PORTS_FROM <= port < low
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))  # free when handed out


def test_a_busy_port_is_not_handed_out(monkeypatch):
    """Every candidate but one is taken: free_port skips the taken ones."""
    import roomcast.natsserver as ns

    low, _ = _ephemeral_range()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        free = next(p for p in range(LISTEN_PORTS_FROM, low) if _bindable(p))
        choices = iter([taken] * 5 + [free])
        monkeypatch.setattr(ns.random, "randrange", lambda a, b: next(choices))
        monkeypatch.setattr(ns, "_ephemeral_range", lambda: (max(low, taken + 1), 60999))
        assert free_port() == free


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
