"""The last messages of each room this node delivers, kept to serve resumes without JetStream.

When a node dies, its clients resume on the others, each asking for what it missed since its
last ``seq``: the same few messages of the same rooms, over and over. Reading them from
JetStream each time costs the NATS servers and the node a request, a reply per message and its
headers, per client. A room's **tail** here is the chain of its last messages as this node
delivered them (each entry's ``prev`` is the entry before's ``seq``), extended backwards with what
a catch-up read from JetStream when that joins on. A resume whose ``since`` is the ``prev`` of
an entry (or the room's last ``seq``) gets the rest of the tail from memory, with no await;
anything else (older, unknown, a gap being repaired) goes to JetStream as before.

Memory is bounded twice: per room (``room_messages``, ``room_bytes``) and per node
(``total_bytes``): past the node's budget the tails of the rooms that delivered least recently
are dropped whole.
"""

from __future__ import annotations

from collections import OrderedDict, deque

Entry = tuple[int, int | None, bytes]  # (seq, prev, stored body)

OVERHEAD = 64  # bytes counted per entry besides its body (tuple, ints, deque slot)


class _Tail:
    __slots__ = ("entries", "size")

    def __init__(self) -> None:
        self.entries: deque[Entry] = deque()
        self.size = 0


class ReplayCache:
    def __init__(self, *, room_messages: int = 256, room_bytes: int = 64 * 1024,
                 total_bytes: int = 32 * 1024 * 1024) -> None:
        self.room_messages = room_messages
        self.room_bytes = room_bytes
        self.total_bytes = total_bytes
        self.size = 0
        self._tails: OrderedDict[str, _Tail] = OrderedDict()  # least recently delivered first
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.room_messages > 0 and self.room_bytes > 0 and self.total_bytes > 0

    def append(self, room: str, seq: int, prev: int | None, body: bytes) -> None:
        """A message delivered live, in order (``prev`` chains on the previous append)."""
        if not self.enabled:
            return
        tail = self._tails.get(room)
        if tail is None:
            tail = self._tails[room] = _Tail()
        else:
            self._tails.move_to_end(room)
            if tail.entries and prev != tail.entries[-1][0]:
                self._clear(tail)  # not a chain any more (cannot happen in order; be safe)
        n = len(body) + OVERHEAD
        tail.entries.append((seq, prev, body))
        tail.size += n
        self.size += n
        self._trim(tail)
        self._enforce_budget()

    def prepend(self, room: str, entries: list[Entry], anchor: int) -> None:
        """Messages read from JetStream, oldest first. Those that end exactly where the tail
        begins (or at ``anchor``, the room's last delivered ``seq``, when the tail is empty)
        are added in front, as far as the room's bounds allow."""
        if not self.enabled or not entries:
            return
        tail = self._tails.get(room)
        head = (tail.entries[0][1] if tail is not None and tail.entries else anchor)
        if head is None:
            return
        keep = [e for e in entries if e[0] <= head]
        if not keep or keep[-1][0] != head:
            return
        if tail is None:
            tail = self._tails[room] = _Tail()
            self._tails.move_to_end(room, last=False)  # not a delivery: evict it first
        for e in reversed(keep):
            n = len(e[2]) + OVERHEAD
            if (len(tail.entries) >= self.room_messages
                    or tail.size + n > self.room_bytes):
                break
            tail.entries.appendleft(e)
            tail.size += n
            self.size += n
        self._enforce_budget()

    def after(self, room: str, since: int, last_seq: int) -> list[Entry] | None:
        """The room's messages after ``since`` if the tail holds all of them, else None.
        ``last_seq``: the room's last delivered ``seq`` on this node."""
        if since <= 0 or since > last_seq:
            return None
        if since == last_seq:
            self.hits += 1
            return []
        tail = self._tails.get(room)
        if tail is None or not tail.entries or tail.entries[-1][0] != last_seq:
            self.misses += 1
            return None
        entries = tail.entries
        # Walk back from the newest: the tail is short and resumes ask for recent messages.
        for i in range(len(entries) - 1, -1, -1):
            seq, prev, _ = entries[i]
            if prev == since:
                self.hits += 1
                return [entries[j] for j in range(i, len(entries))]
            if prev is None or prev < since:
                break
        self.misses += 1
        return None

    def drop(self, room: str) -> None:
        tail = self._tails.pop(room, None)
        if tail is not None:
            self.size -= tail.size

    def __len__(self) -> int:
        return len(self._tails)

    def _clear(self, tail: _Tail) -> None:
        self.size -= tail.size
        tail.entries.clear()
        tail.size = 0

    def _trim(self, tail: _Tail) -> None:
        entries = tail.entries
        while entries and (len(entries) > self.room_messages or tail.size > self.room_bytes):
            n = len(entries.popleft()[2]) + OVERHEAD
            tail.size -= n
            self.size -= n

    def _enforce_budget(self) -> None:
        while self.size > self.total_bytes and self._tails:
            _, tail = self._tails.popitem(last=False)
            self.size -= tail.size
