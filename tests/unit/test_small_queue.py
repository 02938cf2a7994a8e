"""SmallQueue stands in for websockets' per-connection deques: same results for the operations
websockets uses, checked against collections.deque on random operation sequences."""

from __future__ import annotations

import collections

from hypothesis import given
from hypothesis import strategies as st

from roomcast.node.lean import SmallQueue

ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers()),
    st.tuples(st.just("popleft"), st.none()),
    st.tuples(st.just("extendleft"), st.lists(st.integers(), max_size=4)),
    st.tuples(st.just("remove"), st.integers(-2, 2)),
), max_size=60)


@given(ops)
def test_small_queue_behaves_like_deque(seq):
    d, q = collections.deque(), SmallQueue()
    for op, arg in seq:
        results = []
        for target in (d, q):
            try:
                if op == "append":
                    target.append(arg)
                    results.append(None)
                elif op == "popleft":
                    results.append(target.popleft())
                elif op == "extendleft":
                    target.extendleft(reversed(arg))  # as websockets' put_back does
                    results.append(None)
                else:
                    target.remove(arg)
                    results.append(None)
            except (IndexError, ValueError) as exc:
                results.append(type(exc))
        assert results[0] == results[1] or {results[0], results[1]} <= {IndexError, ValueError}
        assert list(d) == list(q) and len(d) == len(q) and bool(d) == bool(q)


def test_small_queue_has_no_instance_dict():
    assert not hasattr(SmallQueue(), "__dict__")
