"""
Tests for L{gatewayd.manhole}: the password-protected telnet manhole.

The whole protocol stack (telnet, login, insults, the Python prompt) runs
for real; only the TCP connection is in memory, pumped by L{IOPump}.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from twisted.conch.telnet import DONT, ECHO, IAC, NAWS, WONT, TelnetProtocol, TelnetTransport
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.test.iosim import IOPump, connect, makeFakeClient, makeFakeServer
from twisted.trial.unittest import SynchronousTestCase

from gatewayd.errors import ConfigError
from gatewayd.manhole import (
    LOGIN_TIMEOUT,
    ManholeError,
    ManholeService,
    checkPasswordFile,
)
from tests.support import temporaryPath


class _TelnetClient(TelnetProtocol):
    """
    A telnet user: agrees to every option the server asks for and keeps
    everything it is shown.
    """

    def __init__(self) -> None:
        self.received = b""
        self.lost = False

    def enableLocal(self, option: bytes) -> bool:
        return True

    def enableRemote(self, option: bytes) -> bool:
        return True

    def disableLocal(self, option: bytes) -> None:
        pass

    def disableRemote(self, option: bytes) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: object) -> None:
        self.lost = True


class _Connection:
    """
    One telnet connection to the manhole, in memory.
    """

    def __init__(self, reactor: MemoryReactorClock) -> None:
        [(port, factory, backlog, interface)] = reactor.tcpServers
        server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.user = _TelnetClient()
        client = TelnetTransport(lambda: self.user)
        self.pump: IOPump = connect(
            server, makeFakeServer(server), client, makeFakeClient(client), clock=reactor
        )
        self._client = client

    def shown(self) -> bytes:
        """
        @return: what the user saw since the last call.
        """
        self.pump.flush()
        shown, self.user.received = self.user.received, b""
        return shown

    def type(self, line: bytes) -> bytes:
        """
        Type C{line} and Enter.

        @return: what the user saw in response.
        """
        self._client.write(line + b"\r\n")
        return self.shown()

    def login(self, user: bytes, password: bytes) -> bytes:
        """
        Answer the prompts.

        @return: what the user saw after the password.
        """
        self.assertPrompt(b"Username: ")
        self.assertPrompt(self.type(user), b"Password: ")
        return self.type(password)

    def assertPrompt(self, shown: bytes | None = None, prompt: bytes = b"Username: ") -> None:
        if shown is None:
            shown = self.shown()
        if not shown.endswith(prompt):
            raise AssertionError(f"expected prompt {prompt!r}, got {shown!r}")


def passwordFile(testCase: SynchronousTestCase, content: bytes, mode: int = 0o600) -> FilePath[str]:
    path = temporaryPath(testCase)
    path.setContent(content)
    path.chmod(mode)
    return path


class ManholeLoginTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.namespaces: list[dict[str, Any]] = []
        self.wans = {"isp2": object(), "isp1": object()}
        self.passwords = passwordFile(self, b"# operators\nadmin:s3cret:with:colons\n\nops:other\n")

        def namespace() -> dict[str, Any]:
            built = {"wans": self.wans, "reactor": self.reactor}
            self.namespaces.append(built)
            return built

        self.service = ManholeService(self.reactor, 0, self.passwords, namespace)
        self.service.startService()

    def tearDown(self) -> None:
        if self.service.running:
            self.service.stopService()

    def test_rightPassword(self) -> None:
        """
        With the right password the user gets a Python prompt over the live
        service tree: C{sorted(wans)} shows the configured WAN names.
        """
        connection = _Connection(self.reactor)
        shown = connection.login(b"admin", b"s3cret:with:colons")
        self.assertIn(b">>> ", shown)
        self.assertIn(b"['isp1', 'isp2']", connection.type(b"sorted(wans)"))
        self.assertEqual(len(self.namespaces), 1)

    def test_refusedOptionsAreNoError(self) -> None:
        """
        A client that refuses a telnet option the session asks for (C{nc}
        refuses all) is answered, not an error: the request's result is
        C{False}, and it is logged at debug level only.
        """
        [(port, factory, backlog, interface)] = self.reactor.tcpServers
        session = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        session.makeConnection(StringTransport())
        with capturedLogs() as events:
            asked = session.do(NAWS)
            offered = session.will(ECHO)
            session.dataReceived(IAC + WONT + NAWS + IAC + DONT + ECHO)
        self.assertEqual((self.successResultOf(asked), self.successResultOf(offered)), (False, False))
        self.assertEqual({e["log_level"] for e in events}, {LogLevel.debug})
        self.assertEqual(
            sorted(formatEvent(e) for e in events),
            ["Telnet client refused do b'\\x1f'", "Telnet client refused will b'\\x01'"],
        )

    def test_namespacePerLogin(self) -> None:
        """
        Every login builds its namespace again, so a WAN added since the
        last login shows up, and nothing one session assigns leaks into the
        next.
        """
        first = _Connection(self.reactor)
        first.login(b"ops", b"other")
        first.type(b"leftover = 1")
        self.wans["isp3"] = object()
        second = _Connection(self.reactor)
        second.login(b"admin", b"s3cret:with:colons")
        self.assertIn(b"['isp1', 'isp2', 'isp3']", second.type(b"sorted(wans)"))
        self.assertIn(b"NameError", second.type(b"leftover"))
        self.assertEqual(len(self.namespaces), 2)

    def test_wrongPassword(self) -> None:
        """
        A wrong password is refused and the user is asked again; after three
        wrong passwords the connection is closed. The namespace is never
        built, so nothing of the daemon is reachable.
        """
        connection = _Connection(self.reactor)
        with capturedLogs() as events:
            for attempt in range(3):
                shown = connection.login(b"admin", b"guess%d" % (attempt,))
                self.assertIn(b"Authentication failed", shown)
                self.assertNotIn(b">>>", shown)
                if attempt < 2:
                    self.assertFalse(connection.user.lost)
                    connection.assertPrompt(shown)
        self.assertTrue(connection.user.lost)
        self.assertEqual(self.namespaces, [])
        self.assertEqual(
            [e["failures"] for e in events if "failures" in e], [1, 2, 3]
        )

    def test_unknownUser(self) -> None:
        """
        A user name that is not in the file is refused like a wrong password.
        """
        connection = _Connection(self.reactor)
        self.assertIn(b"Authentication failed", connection.login(b"root", b"s3cret:with:colons"))
        self.assertEqual(self.namespaces, [])

    def test_typoThenRightPassword(self) -> None:
        """
        One mistyped password does not lock the user out.
        """
        connection = _Connection(self.reactor)
        connection.login(b"admin", b"typo")
        self.assertIn(b">>> ", connection.login(b"admin", b"s3cret:with:colons"))

    def test_passwordFileEditsApply(self) -> None:
        """
        The password file is read at every login: a changed password works
        without a restart, and the old one stops working.
        """
        self.passwords.setContent(b"admin:new\n")
        self.passwords.chmod(0o600)
        old = _Connection(self.reactor)
        self.assertIn(b"Authentication failed", old.login(b"admin", b"s3cret:with:colons"))
        new = _Connection(self.reactor)
        self.assertIn(b">>> ", new.login(b"admin", b"new"))

    def test_passwordFileOpenedUp(self) -> None:
        """
        If the password file becomes readable by other users while the
        daemon runs, every login is refused (and logged) until it is fixed.
        """
        self.passwords.chmod(0o644)
        connection = _Connection(self.reactor)
        with capturedLogs() as events:
            shown = connection.login(b"admin", b"s3cret:with:colons")
        self.assertIn(b"Authentication failed", shown)
        self.assertEqual(self.namespaces, [])
        self.assertTrue(any("readable by other users" in e.get("why", "") for e in events))

    def test_loginTimeout(self) -> None:
        """
        A connection that does not log in within a minute is closed.
        """
        connection = _Connection(self.reactor)
        connection.assertPrompt()
        self.reactor.advance(LOGIN_TIMEOUT - 1)
        connection.shown()
        self.assertFalse(connection.user.lost)
        self.reactor.advance(1)
        self.assertIn(b"Login timed out", connection.shown())
        self.assertTrue(connection.user.lost)

    def test_noTimeoutOnceLoggedIn(self) -> None:
        """
        A logged-in session stays open however long it is idle.
        """
        connection = _Connection(self.reactor)
        connection.login(b"admin", b"s3cret:with:colons")
        self.reactor.advance(LOGIN_TIMEOUT * 10)
        connection.shown()
        self.assertFalse(connection.user.lost)
        self.assertEqual(self.reactor.getDelayedCalls(), [])


class ManholeServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.service = ManholeService(
            self.reactor, 0, passwordFile(self, b"admin:pw\n"), lambda: {}
        )

    def test_loopbackOnly(self) -> None:
        """
        The manhole listens on 127.0.0.1 only, on the configured port, and
        not before the service starts.
        """
        service = ManholeService(self.reactor, 7023, passwordFile(self, b"a:b\n"), dict)
        self.assertEqual(self.reactor.tcpServers, [])
        service.startService()
        [(port, factory, backlog, interface)] = self.reactor.tcpServers
        self.assertEqual((port, interface), (7023, "127.0.0.1"))
        self.assertEqual(service.port, 7023)

    def test_boundPort(self) -> None:
        """
        With port 0 the manhole listens on a free port, shown as C{.port}.
        """
        self.service.startService()
        [(port, factory, backlog, interface)] = self.reactor.tcpServers
        self.assertEqual(port, 0)
        self.assertEqual(self.service.port, 0)

    def test_stopDisconnects(self) -> None:
        """
        Stopping the service closes every session, logged in or not, and
        leaves no timers behind; the returned Deferred fires once they are
        closed.
        """
        self.service.startService()
        loggedIn, atPrompt = _Connection(self.reactor), _Connection(self.reactor)
        loggedIn.login(b"admin", b"pw")
        atPrompt.assertPrompt()
        stopped = self.service.stopService()
        loggedIn.pump.flush()
        self.assertNoResult(stopped)
        atPrompt.pump.flush()
        self.assertIsNone(self.successResultOf(stopped))
        self.assertTrue(loggedIn.user.lost)
        self.assertTrue(atPrompt.user.lost)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stopWithoutSessions(self) -> None:
        """
        Stopping an idle manhole completes at once.
        """
        self.service.startService()
        self.assertIsNone(self.successResultOf(self.service.stopService()))


class CheckPasswordFileTests(SynchronousTestCase):
    def assertRefused(self, path: FilePath[str], message: str) -> None:
        error = self.assertRaises(ManholeError, checkPasswordFile, path)
        self.assertIsInstance(error, ConfigError)
        self.assertEqual(str(error), message)

    def test_good(self) -> None:
        """
        A private file with at least one user is accepted.
        """
        self.assertIsNone(checkPasswordFile(passwordFile(self, b"admin:pw\n")))

    def test_missing(self) -> None:
        """
        A missing file stops startup with one line saying what to do.
        """
        path = temporaryPath(self)
        self.assertRefused(
            path,
            f"manhole.password_file: {path.path} does not exist; "
            "create it with 'user:password' lines and chmod 600 it",
        )

    def test_worldReadable(self) -> None:
        """
        A file other users can read stops startup, naming its mode and the fix.
        """
        path = passwordFile(self, b"admin:pw\n", 0o644)
        self.assertRefused(
            path,
            f"manhole.password_file: {path.path} is readable by other users "
            "(mode 0644); chmod 600 it",
        )

    def test_groupWritable(self) -> None:
        """
        A file the group can change is refused too.
        """
        path = passwordFile(self, b"admin:pw\n", 0o620)
        self.assertRefused(
            path,
            f"manhole.password_file: {path.path} is writable by other users "
            "(mode 0620); chmod 600 it",
        )

    def test_empty(self) -> None:
        """
        A file with no users (only comments and blank lines) is refused.
        """
        path = passwordFile(self, b"# nobody yet\n\n")
        self.assertRefused(
            path, f"manhole.password_file: {path.path} has no 'user:password' lines"
        )

    def test_malformed(self) -> None:
        """
        A line without a password is refused, naming the line.
        """
        path = passwordFile(self, b"admin:pw\nops\n")
        self.assertRefused(
            path, f"manhole.password_file: {path.path} line 2 is not 'user:password'"
        )

    def test_directory(self) -> None:
        """
        A directory is refused.
        """
        path = temporaryPath(self)
        path.makedirs()
        path.chmod(0o700)
        self.assertRefused(path, f"manhole.password_file: {path.path} is not a regular file")

    def test_unreadable(self) -> None:
        """
        A file the daemon may not read is refused with the system's reason.
        """
        if os.geteuid() == 0:
            raise self.skipTest("root can read any file")
        path = passwordFile(self, b"admin:pw\n", 0o000)
        self.assertRefused(
            path, f"manhole.password_file: {path.path} cannot be read (Permission denied)"
        )


class _LiveUser(_TelnetClient):
    """
    A telnet user on a real connection, who can wait (a bounded time) for
    some text.
    """

    def __init__(self, clock: Any) -> None:
        super().__init__()
        self._clock = clock
        self._waiting: tuple[bytes, Deferred[bytes]] | None = None
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self._check()

    def connectionLost(self, reason: object) -> None:
        super().connectionLost(reason)
        self.closed.callback(None)

    def _check(self) -> None:
        if self._waiting is not None and self._waiting[0] in self.received:
            (text, d), self._waiting = self._waiting, None
            shown, self.received = self.received, b""
            d.callback(shown)

    def waitFor(self, text: bytes, timeout: float = 10) -> Deferred[bytes]:
        """
        @return: a L{Deferred} firing with everything shown up to C{text},
            or failing with L{TimeoutError} after C{timeout} seconds.
        """
        d: Deferred[bytes] = Deferred()
        self._waiting = (text, d)
        self._check()
        return d.addTimeout(timeout, self._clock)


def runPrivateReactor(main: Callable[[Any], Any], limit: float = 20) -> None:
    """
    Run C{main(reactor)} (a coroutine function) on a new, uninstalled
    reactor until it finishes or C{limit} seconds pass; fail the test if it
    failed. The global reactor is never touched, so this works under trial
    and under pytest (with or without pytest-twisted) alike.
    """
    from twisted.internet.selectreactor import SelectReactor

    reactor = SelectReactor()
    outcome: list[object] = []

    def finished(result: object) -> None:
        outcome.append(result)
        reactor.stop()

    def begin() -> None:
        d = Deferred.fromCoroutine(main(reactor))
        d.addTimeout(limit, reactor).addBoth(finished)

    reactor.callWhenRunning(begin)
    try:
        reactor.run(installSignalHandlers=False)
    finally:
        for reader in list(getattr(reactor, "_internalReaders", ())):
            reactor.removeReader(reader)
            reader.connectionLost(None)
        for call in reactor.getDelayedCalls():
            call.cancel()
    [result] = outcome
    if isinstance(result, Failure):
        result.raiseException()


class ManholeLoopbackTests(SynchronousTestCase):
    """
    The manhole over a real TCP connection on 127.0.0.1.
    """

    def test_session(self) -> None:
        """
        A user connects to 127.0.0.1 on the bound port, logs in, and sees
        the WAN names; stopping the service closes the session.
        """
        passwords = passwordFile(self, b"admin:pw\n")

        async def session(reactor: Any) -> None:
            service = ManholeService(
                reactor, 0, passwords, lambda: {"wans": {"isp2": 2, "isp1": 1}}
            )
            user = _LiveUser(reactor)
            service.startService()
            try:
                self.assertNotEqual(service.port, 0)
                endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", service.port, timeout=10)
                transport = await connectProtocol(endpoint, TelnetTransport(lambda: user))
                await user.waitFor(b"Username: ")
                transport.write(b"admin\r\n")
                await user.waitFor(b"Password: ")
                transport.write(b"pw\r\n")
                await user.waitFor(b">>> ")
                transport.write(b"sorted(wans)\r\n")
                self.assertIn(b"['isp1', 'isp2']", await user.waitFor(b">>> "))
            finally:
                await service.stopService()
            await user.closed.addTimeout(10, reactor)

        runPrivateReactor(session)
