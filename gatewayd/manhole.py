# -*- test-case-name: tests.unit.test_manhole -*-
"""
The telnet manhole: a Python prompt inside the running daemon.

It listens on 127.0.0.1 only and asks for a user name and password from a
C{user:password} file (the C{[manhole]} section of the configuration).
Each successful login gets a fresh namespace, built by calling the
namespace callable, so it shows the live service tree.
"""

from __future__ import annotations

import hmac
import os
import stat
from typing import TYPE_CHECKING, Any, Callable

from zope.interface import implementer

from twisted.application.service import Service
from twisted.conch.insults.insults import ServerProtocol
from twisted.conch.manhole import ColoredManhole
from twisted.conch.telnet import (
    ECHO,
    AuthenticatingTelnetProtocol,
    ITelnetProtocol,
    OptionRefused,
    TelnetBootstrapProtocol,
    TelnetTransport,
)
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword, UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred, fail, gatherResults, maybeDeferred, succeed
from twisted.internet.protocol import ServerFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from gatewayd.errors import ConfigError

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IListeningPort
    from twisted.python.filepath import FilePath

LOOPBACK = "127.0.0.1"
"""The only address the manhole listens on."""

MAX_LOGIN_FAILURES = 3
"""Wrong passwords accepted on one connection before it is closed."""

LOGIN_TIMEOUT = 60.0
"""Seconds a connection may spend without logging in before it is closed."""

_CONFIG_KEY = "manhole.password_file"


class ManholeError(ConfigError):
    """
    The manhole's password file cannot be used.

    C{str()} of it is one line naming the configuration key, the file and
    what to do, e.g. C{manhole.password_file: /etc/gatewayd/manhole.passwd
    is readable by other users (mode 0644); chmod 600 it}.
    """

    def __init__(self, expected: str, file: str = "") -> None:
        super().__init__(_CONFIG_KEY, expected, file)


def _describeMode(mode: int) -> str:
    if mode & 0o044:
        return "readable"
    if mode & 0o022:
        return "writable"
    return "accessible"


def readPasswordFile(path: FilePath[str]) -> dict[bytes, bytes]:
    """
    Read the manhole's password file: C{user:password} lines; blank lines
    and lines starting with C{#} are ignored; the password is everything
    after the first colon.

    @return: passwords by user name.
    @raise ManholeError: if the file is missing, not a regular file, open to
        other users (any of C{0o077} in its mode), unreadable, malformed or
        has no users.
    """
    where = path.path
    try:
        info = os.stat(where)
    except FileNotFoundError:
        raise ManholeError(
            f"{where} does not exist; create it with 'user:password' lines "
            "and chmod 600 it"
        ) from None
    except OSError as e:
        raise ManholeError(f"{where} cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise ManholeError(f"{where} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise ManholeError(
            f"{where} is {_describeMode(mode)} by other users "
            f"(mode {mode:04o}); chmod 600 it"
        )
    try:
        content = path.getContent()
    except OSError as e:
        raise ManholeError(f"{where} cannot be read ({e.strerror})") from None

    users: dict[bytes, bytes] = {}
    for number, line in enumerate(content.splitlines(), start=1):
        line = line.rstrip(b"\r")
        if not line.strip() or line.lstrip().startswith(b"#"):
            continue
        user, colon, password = line.partition(b":")
        if not colon or not user or not password:
            raise ManholeError(f"{where} line {number} is not 'user:password'")
        if user in users:
            raise ManholeError(f"{where} line {number} repeats a user name")
        users[user] = password
    if not users:
        raise ManholeError(f"{where} has no 'user:password' lines")
    return users


def checkPasswordFile(path: FilePath[str]) -> None:
    """
    Check that the manhole can use C{path}; called at startup, so that a
    bad file stops the daemon with one clear line.

    @raise ManholeError: as L{readPasswordFile} does.
    """
    readPasswordFile(path)


@implementer(ICredentialsChecker)
class PasswordFileChecker:
    """
    Check user names and passwords against the password file, read again
    at every login (so edits apply at once, and a file that became readable
    by other users stops all logins).
    """

    credentialInterfaces = (IUsernamePassword,)
    log = Logger()

    def __init__(self, path: FilePath[str]) -> None:
        """
        @param path: the C{user:password} file.
        """
        self._path = path

    def requestAvatarId(self, credentials: IUsernamePassword) -> Deferred[bytes]:
        """
        @return: a L{Deferred} firing with the user name, or failing with
            L{UnauthorizedLogin}.
        """
        try:
            users = readPasswordFile(self._path)
        except ManholeError as e:
            self.log.error("Manhole login refused: {why}", why=str(e))
            return fail(UnauthorizedLogin("password file unusable"))
        expected = users.get(credentials.username)
        if expected is None or not hmac.compare_digest(credentials.password, expected):
            return fail(UnauthorizedLogin("wrong user name or password"))
        return succeed(credentials.username)


@implementer(IRealm)
class ManholeRealm:
    """
    Give each logged-in user a Python prompt over a fresh namespace.
    """

    def __init__(self, namespace: Callable[[], dict[str, Any]]) -> None:
        """
        @param namespace: called once per login; its result (copied) is the
            session's namespace.
        """
        self._namespace = namespace

    def requestAvatar(
        self, avatarId: bytes, mind: object, *interfaces: Any
    ) -> tuple[Any, TelnetBootstrapProtocol, Callable[[], None]]:
        if ITelnetProtocol not in interfaces:
            raise NotImplementedError("The manhole only speaks telnet.")
        namespace = dict(self._namespace())
        session = TelnetBootstrapProtocol(ServerProtocol, ColoredManhole, namespace)
        return ITelnetProtocol, session, lambda: None


class _LoginProtocol(AuthenticatingTelnetProtocol):
    """
    The C{Username:} / C{Password:} dialogue, with a time limit and a limit
    on wrong passwords.

    Telnet option negotiation only hides the typed password; if the client
    does not negotiate (e.g. C{nc}), logging in still works.
    """

    log = Logger()
    failures = 0
    _timeout: IDelayedCall | None = None

    def __init__(self, portal: Portal, clock: Any) -> None:
        super().__init__(portal)
        self._clock = clock

    def connectionMade(self) -> None:
        self._timeout = self._clock.callLater(LOGIN_TIMEOUT, self._timedOut)
        super().connectionMade()

    def connectionLost(self, reason: Failure) -> None:
        self._cancelTimeout()
        super().connectionLost(reason)

    def _cancelTimeout(self) -> None:
        if self._timeout is not None:
            if self._timeout.active():
                self._timeout.cancel()
            self._timeout = None

    def _timedOut(self) -> None:
        self._timeout = None
        self.log.info("Manhole login timed out for {peer}", peer=self.transport.getPeer())
        self.transport.write(b"\nLogin timed out\n")
        self.transport.loseConnection()

    def telnet_User(self, line: bytes) -> str:
        self.username = line.rstrip(b"\r")
        self.transport.will(ECHO).addErrback(lambda _: None)
        self.transport.write(b"Password: ")
        return "Password"

    def telnet_Password(self, line: bytes) -> str:
        username, password = self.username, line.rstrip(b"\r")
        del self.username

        def login(_: object) -> None:
            d = self.portal.login(UsernamePassword(username, password), None, ITelnetProtocol)
            d.addCallbacks(
                self._cbLogin, self._ebLogin, callbackArgs=(username,), errbackArgs=(username,)
            )
            d.addErrback(lambda f: self.log.failure("Manhole session did not start", f))

        # Proceed whether or not the client agrees to echo again.
        self.transport.wont(ECHO).addBoth(login)
        return "Discard"

    def _cbLogin(self, ial: tuple[Any, Any, Callable[[], None]], username: bytes = b"") -> None:
        self._cancelTimeout()
        self.log.info(
            "Manhole login as {user!r} from {peer}", user=username, peer=self.transport.getPeer()
        )
        super()._cbLogin(ial)

    def _ebLogin(self, failure: Failure, username: bytes = b"") -> None:
        if not failure.check(UnauthorizedLogin):
            self.log.failure("Manhole login failed", failure)
        self.failures += 1
        self.log.info(
            "Manhole login failed for {user!r} from {peer} ({failures} of {limit})",
            user=username,
            peer=self.transport.getPeer(),
            failures=self.failures,
            limit=MAX_LOGIN_FAILURES,
        )
        if self.failures >= MAX_LOGIN_FAILURES:
            self.transport.write(b"\nAuthentication failed\n")
            self.state = "Discard"
            self.transport.loseConnection()
        else:
            super()._ebLogin(failure)


class _Session(TelnetTransport):
    """
    One manhole connection; tells its factory when it ends.

    A client may refuse any telnet option the session asks for (C{nc}
    refuses all of them): that is answered, not an error, so it is logged
    at debug level instead of reaching TelnetBootstrapProtocol's
    error log.
    """

    factory: _ManholeFactory
    log = Logger()

    def do(self, option: bytes) -> Deferred[bool]:
        return super().do(option).addErrback(self._refused, "do", option)

    def will(self, option: bytes) -> Deferred[bool]:
        return super().will(option).addErrback(self._refused, "will", option)

    def _refused(self, failure: Failure, request: str, option: bytes) -> bool:
        failure.trap(OptionRefused)
        self.log.debug("Telnet client refused {request} {option!r}", request=request, option=option)
        return False

    def connectionMade(self) -> None:
        self.factory._sessions[self] = []
        super().connectionMade()

    def connectionLost(self, reason: Failure) -> None:
        try:
            super().connectionLost(reason)
        finally:
            for waiter in self.factory._sessions.pop(self, []):
                waiter.callback(None)


class _ManholeFactory(ServerFactory):
    noisy = False

    def __init__(self, portal: Portal, clock: Any) -> None:
        self._portal = portal
        self._clock = clock
        self._sessions: dict[_Session, list[Deferred[None]]] = {}

    def buildProtocol(self, addr: Any) -> _Session:
        session = _Session(_LoginProtocol, self._portal, self._clock)
        session.factory = self
        return session

    def disconnectAll(self) -> Deferred[Any]:
        """
        Close every open session.

        @return: a L{Deferred} that fires once all of them are closed.
        """
        waits = []
        for session, waiters in list(self._sessions.items()):
            waiters.append(d := Deferred())
            waits.append(d)
            session.transport.abortConnection()
        return gatherResults(waits)


class ManholeService(Service):
    """
    The telnet manhole on C{127.0.0.1}.

    @ivar port: the TCP port: the bound one while listening (useful when
        configured as 0), else the configured one.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        port: int,
        passwordFile: FilePath[str],
        namespace: Callable[[], dict[str, Any]],
    ) -> None:
        """
        @param reactor: an L{IReactorTCP} and L{IReactorTime} provider.
        @param port: the TCP port to listen on; 0 for any free port.
        @param passwordFile: the C{user:password} file, read at every login.
        @param namespace: called at every login to build that session's
            namespace.
        """
        self._reactor = reactor
        self._configuredPort = port
        self._passwordFile = passwordFile
        self._namespace = namespace
        self._listening: IListeningPort | None = None
        self._factory: _ManholeFactory | None = None

    @property
    def port(self) -> int:
        if self._listening is not None:
            return int(self._listening.getHost().port)
        return self._configuredPort

    def startService(self) -> None:
        super().startService()
        portal = Portal(ManholeRealm(self._namespace), [PasswordFileChecker(self._passwordFile)])
        self._factory = _ManholeFactory(portal, self._reactor)
        self._listening = self._reactor.listenTCP(
            self._configuredPort, self._factory, interface=LOOPBACK
        )
        self.log.info("Manhole listening on {host}:{port}", host=LOOPBACK, port=self.port)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        listening, self._listening = self._listening, None
        factory, self._factory = self._factory, None
        waits: list[Deferred[Any]] = []
        if listening is not None:
            waits.append(maybeDeferred(listening.stopListening))
        if factory is not None:
            waits.append(factory.disconnectAll())
        return gatherResults(waits).addCallback(lambda _: None)
