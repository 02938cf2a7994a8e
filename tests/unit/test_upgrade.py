"""node/upgrade.py, the upgrade's fast path, against websockets itself: whatever it takes,
websockets' ``ServerProtocol`` takes too, as the same request with the same accept key and the
same 101; and it does take the plain requests real clients send (else it would be dead code)."""

from __future__ import annotations

import base64
import email.utils
import re
import time

from hypothesis import example, given, settings
from hypothesis import strategies as st
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import enable_server_permessage_deflate
from websockets.http11 import Request
from websockets.server import ServerProtocol

from roomcast.node.upgrade import MAX_HEAD, headers_of, http_date, recognize, response_head

KEY = base64.b64encode(b"0123456789abcdef").decode()


def request(headers, target="/ws", line=b"GET %s HTTP/1.1", sep=b"\r\n", tail=b"") -> bytes:
    head = [line % target.encode() if b"%s" in line else line]
    head += [n.encode("latin-1") + b": " + v.encode("latin-1") if isinstance(v, str) else n + v
             for n, v in headers]
    return sep.join(head) + sep + sep + tail


PLAIN = [("Host", "127.0.0.1:8080"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
         ("Sec-WebSocket-Key", KEY), ("Sec-WebSocket-Version", "13")]


def websockets_takes(data: bytes, extensions: bool):
    """websockets' verdict on ``data`` as a server's first read: (request, response), or None
    when it is not exactly one request it upgrades."""
    protocol = ServerProtocol(
        max_size=65536, extensions=enable_server_permessage_deflate(None) if extensions else None)
    protocol.receive_data(data)
    events = protocol.events_received()
    if len(events) != 1 or not isinstance(events[0], Request) or protocol.data_to_send():
        return None
    response = protocol.accept(events[0])
    return (events[0], response) if response.status_code == 101 else None


def check_same(data: bytes, extensions: bool) -> bool:
    """If the fast path takes ``data``, websockets takes it the same way; whether it took it."""
    fast = recognize(data, extensions)
    if fast is None:
        return False
    ours, accept = fast
    theirs = websockets_takes(data, extensions)
    assert theirs is not None, data
    request, response = theirs
    assert (ours.path, ours.method, ours.protocol) == (request.path, "GET", "HTTP/1.1")
    assert list(ours.headers.raw_items()) == list(request.headers.raw_items())
    for name in {n for n, _ in request.headers.raw_items()}:
        assert ours.headers.get_all(name) == request.headers.get_all(name)
    assert response.headers["Sec-WebSocket-Accept"] == accept
    assert "Sec-WebSocket-Extensions" not in response.headers  # nothing was negotiated
    assert "Sec-WebSocket-Protocol" not in response.headers
    response.headers["Server"] = "roomcast"
    expected = re.sub(rb"Date: [^\r]*", b"Date: " + http_date().encode(), response.serialize())
    assert response_head(accept, "roomcast") == expected
    return True


def test_the_requests_real_clients_send_take_the_fast_path():
    """A bare client's, a browser's (extensions offered, compression off) and a bearer one."""
    browser = [("Host", "localhost:8080"), ("Connection", "keep-alive, Upgrade"),
               ("Pragma", "no-cache"), ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64)"),
               ("Upgrade", "websocket"), ("Origin", "http://localhost:8080"),
               ("Sec-WebSocket-Version", "13"), ("Accept-Language", "en-US,en;q=0.9"),
               ("Sec-WebSocket-Key", KEY),
               ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits")]
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEifQ.c2lnbmF0dXJl"
    for headers, target in ((PLAIN, "/ws"), (browser, f"/ws?token={token}"),
                            (PLAIN + [("Authorization", f"Bearer {token}")], "/ws")):
        assert check_same(request(headers, target), extensions=False)
    # With compression on, an offer of it goes to websockets, which negotiates it.
    assert recognize(request(browser), extensions=True) is None
    assert check_same(request(PLAIN), extensions=True)


def test_anything_unusual_goes_to_websockets():
    """Each check of the fast path, failed on purpose, leaves the request to websockets."""
    def without(name):
        return [(n, v) for n, v in PLAIN if n != name]

    cases = [
        request(PLAIN, line=b"POST %s HTTP/1.1"), request(PLAIN, line=b"GET %s HTTP/1.0"),
        request(PLAIN, target="ws"), request(PLAIN, target="/w s"), request(PLAIN, sep=b"\n"),
        request(PLAIN, tail=b"\x81\x00"), request(PLAIN)[:-1],
        request(PLAIN + [("Host", "other")]), request(PLAIN + [("host", "other")]),
        request(without("Upgrade")), request(without("Connection")),
        request(without("Sec-WebSocket-Key")), request(without("Sec-WebSocket-Version")),
        request([(n, "8" if n == "Sec-WebSocket-Version" else v) for n, v in PLAIN]),
        request([(n, "close" if n == "Connection" else v) for n, v in PLAIN]),
        request([(n, "h2c" if n == "Upgrade" else v) for n, v in PLAIN]),
        request([(n, "c2hvcnQ=" if n == "Sec-WebSocket-Key" else v) for n, v in PLAIN]),
        request(PLAIN + [("Sec-WebSocket-Protocol", "chat")]),
        request(PLAIN + [("Content-Length", "0")]), request(PLAIN + [("Transfer-Encoding", "x")]),
        request(PLAIN + [(b"Bad Name", b": x")]), request(PLAIN + [(b"X", b": \x00")]),
        request(PLAIN + [("X-Pad", "p" * MAX_HEAD)]),
    ]
    for data in cases:
        assert recognize(data, extensions=False) is None, data


def test_headers_of_equals_headers_built_the_public_way():
    """The one seam into websockets' internals builds what ``set_insecure`` builds."""
    pairs = [("Host", "h"), ("X-A", "1"), ("Origin", "o")]
    ours = headers_of(pairs, {n.lower(): [v] for n, v in pairs})
    public = Headers()
    for n, v in pairs:
        public.set_insecure(n, v)
    assert list(ours.raw_items()) == list(public.raw_items()) and str(ours) == str(public)
    assert [ours.get_all(n) for n in ("host", "X-A", "ORIGIN", "none")] == \
        [public.get_all(n) for n in ("host", "X-A", "ORIGIN", "none")]
    assert ours == public


def test_the_date_is_an_http_date_of_now():
    """The 101's ``Date``, formatted once a second, is an IMF-fixdate of now."""
    ours = email.utils.parsedate_to_datetime(http_date())
    assert ours.tzname() == "UTC" and http_date().endswith(" GMT")
    assert abs(ours.timestamp() - time.time()) <= 1.5


_names = st.sampled_from(["Host", "Upgrade", "upgrade", "Connection", "Sec-WebSocket-Key",
                          "Sec-WebSocket-Version", "Origin", "Authorization",
                          "Sec-WebSocket-Extensions", "Sec-WebSocket-Protocol",
                          "Content-Length", "Transfer-Encoding", "X-Any"])
_values = st.one_of(
    st.sampled_from(["websocket", "WebSocket", "Upgrade", "upgrade", "keep-alive, Upgrade",
                     "upgrade, keep-alive", "Upgrade, websocket", "13", "8", KEY, KEY[:-1],
                     KEY + "A", " " + KEY + "\t", "permessage-deflate", "chat", "0", "", "x"]),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=12))
_header = st.one_of(st.tuples(_names, _values),
                    st.tuples(st.binary(max_size=8), st.binary(max_size=8)))


@settings(max_examples=400, deadline=None)
@given(base=st.lists(st.sampled_from(PLAIN), unique=True),
       extra=st.lists(_header, max_size=4),
       order=st.randoms(use_true_random=False),
       target=st.one_of(st.just("/ws"), st.just("/ws?token=a.b.c"),
                        st.text(alphabet=st.characters(max_codepoint=127), max_size=10)),
       line=st.sampled_from([b"GET %s HTTP/1.1", b"GET %s HTTP/1.0", b"get %s HTTP/1.1",
                             b"GET  %s HTTP/1.1", b"GET %s HTTP/1.1 "]),
       sep=st.sampled_from([b"\r\n", b"\r\n", b"\n"]),
       tail=st.sampled_from([b"", b"", b"\r\n", b"\x81\x80abcd"]),
       extensions=st.booleans())
@example(base=PLAIN, extra=[], order=None, target="/ws", line=b"GET %s HTTP/1.1", sep=b"\r\n",
         tail=b"", extensions=False)
def test_what_the_fast_path_takes_websockets_takes_the_same_way(base, extra, order, target,
                                                                line, sep, tail, extensions):
    """Generated and mutated requests: taken only as websockets takes them; plain ones always."""
    headers = list(base) + list(extra)
    if order is not None:
        order.shuffle(headers)
    data = request(headers, target, line, sep, tail)
    took = check_same(data, extensions)
    if len(base) == len(PLAIN) and not extra and target.startswith("/ws") and tail == b"" \
            and sep == b"\r\n" and line == b"GET %s HTTP/1.1":
        assert took  # the plain request, in any header order, is taken
