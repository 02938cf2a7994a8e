"""What one loopback `send` costs the sender, depending on whether the receiver is asleep.

    python -m bench.writecost

Forks one receiver process that reads a 127.0.0.1 TCP socket until EOF and measures the
sender's CPU time per ``send``: (a) paced, so the receiver is asleep at each write and the
kernel wakes it inside the sender's call, (b) back to back, so the receiver is busy, and (c)
paced again with 50 frames joined into one write. This is the floor under a node's CPU per
delivery at moderate load (docs/performance.md): joining frames helps only when several
are ready for the same member at once.
"""

from __future__ import annotations

import os
import socket
import time

from bench.harness import machine, self_cpu


def main() -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    pid = os.fork()
    if pid == 0:  # receiver: read until EOF
        c = socket.create_connection(("127.0.0.1", port))
        while c.recv(1 << 16):
            pass
        os._exit(0)
    s, _ = srv.accept()
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    frame = b"x" * 120  # about one message frame
    n = 5000
    c0 = self_cpu()
    for _ in range(n):
        time.sleep(0.0002)
    sleep_cost = (self_cpu() - c0) / n

    def paced(payload: bytes) -> float:
        c0 = self_cpu()
        for _ in range(n):
            s.send(payload)
            time.sleep(0.0002)
        return (self_cpu() - c0) / n - sleep_cost

    asleep = paced(frame)
    c0 = self_cpu()
    for _ in range(n * 4):
        s.send(frame)
    busy = (self_cpu() - c0) / (n * 4)
    joined = paced(frame * 50)
    s.close()
    os.waitpid(pid, 0)
    print(f"# loopback send cost to the sender; {machine()}")
    print("| write | sender CPU µs per write | per frame |")
    print("|---|---|---|")
    print(f"| 1 frame, receiver asleep (woken by the write) | {asleep * 1e6:.1f} | "
          f"{asleep * 1e6:.1f} |")
    print(f"| 1 frame, receiver busy (back to back) | {busy * 1e6:.1f} | {busy * 1e6:.1f} |")
    print(f"| 50 frames joined, receiver asleep | {joined * 1e6:.1f} | "
          f"{joined / 50 * 1e6:.2f} |")


if __name__ == "__main__":
    main()
