# -*- test-case-name: tests.unit.test_direct -*-
"""
The direct path for SOAP control requests.

Control points poll: miniupnpc, games and torrent clients open a new
connection for every small SOAP POST.  twisted.web's request machinery
(header objects, the request, resource traversal, timers per connection)
costs several times what the action itself does, so a LAN connection
(L{gatewayd.upnp.http.LANChannel}) starts on this path: a complete, plain
POST to a control URL is answered by the service's
L{ControlResource.answer<gatewayd.upnp.soap.ControlResource.answer>}
directly, and the first byte of anything else hands the connection to
twisted.web's C{HTTPChannel} for good, which then does all the HTTP it
does.

"Plain" is deliberately narrow, so that the direct path never has to decide
anything twisted.web would decide differently: C{POST <path> HTTP/1.0|1.1}
with an exact control path, at most C{maxHeaders} well-formed header lines
(no folding, no bare LF), one C{Content-Length} within the body limit, no
C{Transfer-Encoding}, no C{Expect}, at most one C{Host}, C{SOAPACTION} and
C{Connection}, a peer and C{Host} the LAN policy accepts.  Everything else,
refusals included, is twisted.web's.

The connections' timeouts are checked by one L{Deadlines} timer instead of a
timer per connection.
"""

from __future__ import annotations

import re
import time
from functools import lru_cache
from types import MappingProxyType
from typing import Callable, Final, Mapping, NamedTuple

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web.http import RESPONSES, datetimeToString

from gatewayd.upnp.soap import CONTENT_TYPE, Answer

#: L{readControlHead}'s answer for a request the direct path does not take.
HAND_OVER: Final = "hand over"

_LINE = rb"POST (/[!-~]{0,2048}) HTTP/1\.([01])"
_REQUEST_LINE = re.compile(_LINE)
#: A whole plain head: the request line, header lines (no folding, no bare
#: CR or LF), the empty line.
_HEAD = re.compile(
    _LINE + rb"\r\n((?:[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}:[\t\x20-\x7e\x80-\xff]*\r\n)*)\r\n"
)
_POST = b"POST /"
_VERSIONS = {b"0": b"HTTP/1.0", b"1": b"HTTP/1.1"}

#: Fields that may appear once only on the direct path (twisted.web decides
#: what two of them mean); C{Transfer-Encoding} and C{Expect} are never
#: taken.
_ONCE = frozenset((b"content-length", b"host", b"soapaction", b"connection"))


class ControlHead(NamedTuple):
    """
    The head of a plain SOAP POST.

    @ivar path: the request path (exactly as sent).
    @ivar version: C{b"HTTP/1.0"} or C{b"HTTP/1.1"}.
    @ivar fields: the header fields by lower-case name (the first of
        repeated ones that may repeat), values without surrounding blanks.
    @ivar length: the C{Content-Length}.
    @ivar bodyStart: where the body starts in the buffer.
    @ivar keepAlive: whether the connection stays open after the answer:
        HTTP/1.1 without C{Connection: close} (twisted.web keeps no HTTP/1.0
        connection open either).
    """

    path: bytes
    version: bytes
    fields: Mapping[bytes, bytes]
    length: int
    bodyStart: int
    keepAlive: bool


def _keepAlive(version: bytes, connection: bytes | None) -> bool:
    if version != b"HTTP/1.1":
        return False
    if connection is None:
        return True
    connection = connection.lower()
    return b"close" not in connection or b"close" not in [
        t.strip() for t in connection.split(b",")
    ]


def readControlHead(
    buffer: bytes | bytearray, maxSize: int, maxFields: int, bodyLimit: int
) -> ControlHead | None | str:
    """
    Read the head of the request at the start of C{buffer}.

    @param maxSize: the largest head accepted.
    @param maxFields: the most header lines accepted.
    @param bodyLimit: the largest C{Content-Length} accepted.
    @return: the head of a plain POST (L{ControlHead}); L{None} when more
        bytes are needed to tell; L{HAND_OVER} for anything else (decided
        as early as the bytes allow: the first byte of a GET).
    """
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) >= maxSize or not buffer.startswith(_POST[: len(buffer)]):
            return HAND_OVER
        lineEnd = buffer.find(b"\r\n")
        if lineEnd >= 0 and _REQUEST_LINE.fullmatch(buffer, 0, lineEnd) is None:
            return HAND_OVER
        return None
    if end + 4 > maxSize:
        return HAND_OVER
    return _readHead(bytes(buffer[: end + 4]), maxFields, bodyLimit)


@lru_cache(maxsize=256)
def _readHead(head: bytes, maxFields: int, bodyLimit: int) -> ControlHead | str:
    """
    Read a whole head (up to and with the empty line).  Pure, so it is
    remembered: a control point sends the same head for the same action
    again and again.
    """
    found = _HEAD.fullmatch(head)
    if found is None:
        return HAND_OVER
    lines = found[3].split(b"\r\n")
    del lines[-1]
    if len(lines) > maxFields:
        return HAND_OVER
    fields: dict[bytes, bytes] = {}
    for line in lines:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name in fields:
            if name in _ONCE:
                return HAND_OVER
            continue
        fields[name] = value.strip(b" \t")
    if b"transfer-encoding" in fields or b"expect" in fields:
        return HAND_OVER
    length = fields.get(b"content-length", b"")
    if not (0 < len(length) <= 9 and length.isdigit()) or int(length) > bodyLimit:
        return HAND_OVER
    version = _VERSIONS[found[2]]
    return ControlHead(
        found[1],
        version,
        MappingProxyType(fields),
        int(length),
        len(head),
        _keepAlive(version, fields.get(b"connection")),
    )


_date: tuple[int, bytes] = (0, b"")


def _httpDate() -> bytes:
    """
    @return: the C{Date} value for now, formatted once per second.
    """
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, datetimeToString(now))
    return _date[1]


def responseBytes(answer: Answer, version: bytes, keepAlive: bool, server: bytes) -> bytes:
    """
    @return: the whole HTTP response carrying C{answer}, with the status
        line and headers twisted.web writes for it (Connection, Server,
        Date, Content-Type for a body, Content-Length, EXT).
    """
    code, body = answer
    parts = [b"%s %d %s\r\n" % (version, code, RESPONSES.get(code, b"Unknown Status"))]
    if not keepAlive:
        parts.append(b"Connection: close\r\n")
    parts.append(b"Server: %s\r\nDate: %s\r\n" % (server, _httpDate()))
    if body:
        parts.append(b"Content-Type: %s\r\n" % (CONTENT_TYPE,))
    parts.append(b"Content-Length: %d\r\nExt: \r\n\r\n" % (len(body),))
    parts.append(body)
    return b"".join(parts)


class Deadlines:
    """
    Deadlines of many connections, checked by one timer that ticks while
    any deadline is set: cheaper than a timer per connection, which costs
    more than the request it guards.  A deadline passes up to one C{tick}
    late; the timer stops at the first tick that finds nothing to watch, or
    at L{stop}.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, tick: float = 1.0) -> None:
        self._clock = clock
        self._tick = tick
        self._due: dict[object, tuple[float, Callable[[], object]]] = {}
        self._call: IDelayedCall | None = None

    def set(self, key: object, seconds: float, expired: Callable[[], object]) -> None:
        """
        Call C{expired()} once C{seconds} have passed, unless C{key}'s
        deadline is set again or discarded before.
        """
        self._due[key] = (self._clock.seconds() + seconds, expired)
        if self._call is None:
            self._call = self._clock.callLater(self._tick, self._sweep)

    def left(self, key: object) -> float | None:
        """
        @return: the seconds left until C{key}'s deadline, or L{None}.
        """
        due = self._due.get(key)
        return None if due is None else due[0] - self._clock.seconds()

    def discard(self, key: object) -> None:
        """
        Forget C{key}'s deadline.
        """
        self._due.pop(key, None)

    def stop(self) -> None:
        """
        Forget every deadline and stop the timer.
        """
        self._due.clear()
        if self._call is not None:
            self._call.cancel()
            self._call = None

    def _sweep(self) -> None:
        self._call = None
        if not self._due:
            return
        now = self._clock.seconds()
        passed = [(key, expired) for key, (when, expired) in self._due.items() if when <= now]
        for key, expired in passed:
            del self._due[key]
            try:
                expired()
            except Exception:
                self.log.failure("A connection's deadline handler failed")
        if self._call is None:
            self._call = self._clock.callLater(self._tick, self._sweep)
