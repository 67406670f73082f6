# -*- test-case-name: tests.unit.test_dhcp -*-
"""
The C{dhcp} link type: the WAN's address from the ISP's DHCP server,
through pyroute2's asyncio DHCP client.

Configuration keys under C{link}:
  - C{client_id} (optional string): sent as option 61 (type 0) instead of
    the interface's MAC address;
  - C{hostname} (optional string): sent as option 12; nothing by default;
  - C{release_on_stop} (optional, default false): send a DHCPRELEASE and
    remove the address when the daemon stops, even with
    C{[gateway] on_stop = "keep"}.

Behaviour: C{connect()} sets the interface up and, once it has carrier,
runs the client: DISCOVER/OFFER/REQUEST/ACK, renewal at T1, rebinding at
T2; with a lease persisted in C{state_dir} (C{dhcp-<interface>.lease.json})
it starts in INIT-REBOOT and asks for the same address again. Every ACK
(bound, renewed, rebound, or a new address) is applied to the kernel:
address, the WAN's routing table, the rule for its address; a changed
address replaces the old one. The link is usable once the kernel has the
lease. OFFERs and ACKs with a bogus address (0.0.0.0, multicast, broadcast,
loopback, link-local, inside the LAN's prefixes) or a router outside the
subnet are refused with a log line; malformed packets are dropped. A NAK
or the lease's end removes the address and routes (the link reports
C{ERROR_ISP_DISCONNECT}) and the client starts over; the end of a lease is
also watched on the reactor's clock, so that an address is removed when
its lease runs out even while the client is stopped. Carrier loss stops the
client (the address stays, unconfirmed); carrier return starts it again,
in INIT-REBOOT. C{disconnect()} releases the lease (DHCPRELEASE) and
removes the address and routes. When the daemon stops, the lease and
address are kept (C{on_stop = "keep"}: a restart neither cuts the LAN off
nor changes the external address); C{"clean"} or C{release_on_stop}
release the lease and remove what the link added.

pyroute2's client runs with C{handle_signals=False} (twistd owns SIGHUP and
SIGUSR1), without pidfile, and with its lease file in C{state_dir}.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from zope.interface import implementer

from gatewayd.errors import ConfigError
from gatewayd.interfaces import (
    ON_STOP_CLEAN,
    ILinkType,
    InterfaceState,
    IRenewableLink,
    LinkContext,
    LinkStatus,
)
from gatewayd.link.addressing import WANAddressing
from gatewayd.link.base import ObservableLink, checkKeys, describe
from gatewayd.link.lease import Lease, LeaseClock, MalformedDHCP, leaseFromAck, loadLeaseFile

ERROR_ISP_DISCONNECT = "ERROR_ISP_DISCONNECT"
ERROR_IP_CONFIGURATION = "ERROR_IP_CONFIGURATION"

#: Seconds the daemon's stop waits for a DHCPRELEASE to go out.
STOP_TIMEOUT = 5.0


@dataclass(frozen=True)
class DHCPSettings:
    """
    @ivar clientId: option 61's identifier, or L{None} for the MAC address.
    @ivar hostname: option 12, or L{None} to send none.
    @ivar releaseOnStop: release the lease when the daemon stops.
    """

    clientId: bytes | None = None
    hostname: str | None = None
    releaseOnStop: bool = False


class LeaseEvents:
    """
    What a DHCP client session tells its link (the hooks of pyroute2's
    client call these; tests call them directly).
    """

    def leaseBound(self, ack: Mapping[str, Any], how: str) -> None:
        "A DHCPACK granted or extended a lease; C{how}: bound, renewed, rebound."

    def leaseLost(self, why: str) -> None:
        "The lease ended: C{why} is C{nak} or C{expired}."

    def screen(self, message: Mapping[str, Any]) -> str | None:
        "@return: why an OFFER or ACK is refused, or L{None}."


#: Starts a client session: C{(link, interface, settings, leaseFile)} ->
#: a session with C{stop(release) -> Deferred} and C{renew() -> Deferred}.
SessionFactory = Callable[[LeaseEvents, str, DHCPSettings, FilePath], Any]


@implementer(IRenewableLink)
class DHCPLink(ObservableLink, LeaseEvents):
    """
    A WAN whose address is leased by DHCP; see the module docstring.
    """

    controllable = True
    #: It puts addresses and routes into the kernel (the default route may
    #: point at it).
    configuresKernel = True
    log = Logger()

    def __init__(
        self,
        interface: str,
        netlink: Any,
        clock: IReactorTime,
        settings: DHCPSettings,
        leaseFile: FilePath,
        table: int,
        onStop: str,
        lanInterfaces: Sequence[str] = (),
        session: SessionFactory | None = None,
    ) -> None:
        super().__init__(interface)
        self._netlink = netlink
        self._clock = clock
        self._settings = settings
        self._leaseFile = leaseFile
        self._table = table
        self._onStop = onStop
        self._lanInterfaces = tuple(lanInterfaces)
        self._newSession = session if session is not None else PyrouteSession
        self._session: Any = None
        self._sessionOps: Deferred[None] = succeed(None)
        self._kernelOps: Deferred[None] = succeed(None)
        self._expiry = LeaseClock(clock, self._expired)
        self._state: InterfaceState | None = None
        self._unwatch: Callable[[], None] | None = None
        self._wanted = False
        self._confirmed = False
        self._applied: WANAddressing | None = None
        self._appliedFor: Lease | None = None
        self._error: str | None = None
        self._wasUp: bool | None = None

    # Service.

    def startService(self) -> None:
        """
        Watch the interface; take over the lease a previous run kept (its
        address is probably still on the interface).
        """
        super().startService()
        persisted = self._loadLease()
        if persisted is not None:
            self._applied = self._addressing(persisted)
            self._appliedFor = persisted
            if persisted.expired(self._clock.seconds()):
                self.log.info(
                    "WAN link {interface}: the saved DHCP lease of {address} has ended",
                    interface=self.interface,
                    address=str(persisted.address),
                )
                self._forget()
            else:
                self._expiry.hold(persisted)
        self._unwatch = self._netlink.watchInterface(self.interface, self._interfaceChanged)

    def stopService(self) -> Deferred[None]:
        """
        Stop the client; release the lease and remove the address with
        C{on_stop = "clean"} or C{release_on_stop}, else keep both.
        """
        super().stopService()
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        release = self._onStop == ON_STOP_CLEAN or self._settings.releaseOnStop
        wanted, self._wanted = self._wanted, False
        self._expiry.release()
        # The kernel changes first: the netlink socket closes soon after
        # this stop (it lets writes already sent finish).
        forgotten = self._forget(restore=wanted) if release else succeed(None)
        stopped = self._stopSession(release)
        stopped.addTimeout(STOP_TIMEOUT, self._clock)
        d = DeferredList([forgotten, stopped], consumeErrors=True)
        return d.addCallback(lambda _: None)

    # ILink.

    def connect(self) -> Deferred[None]:
        """
        Set the interface up and run the client while there is carrier.
        """
        self._wanted = True
        self._error = None

        async def start() -> None:
            await self._netlink.whenReady()
            state = self._netlink.interfaceState(self.interface)
            if state is None:
                raise OSError(f"WAN interface {self.interface} does not exist")
            if self._wasUp is None:
                self._wasUp = state.up
            if not state.up:
                await self._netlink.setLinkUp(self.interface, True)
            self._state = self._netlink.interfaceState(self.interface) or state
            if self._carrier() and self._wanted:
                self._startSession()

        return Deferred.fromCoroutine(start())

    def disconnect(self) -> Deferred[None]:
        """
        Release the lease and remove the address and routes.
        """
        self._wanted = False
        self._expiry.release()
        d = self._stopSession(release=True)
        d.addCallback(lambda _: self._forget())
        return d

    def renew(self) -> Deferred[None]:
        """
        Ask the server to extend the lease now (only while bound).
        """
        if self._session is None:
            return succeed(None)
        return self._session.renew()

    # LeaseEvents, from the client session.

    def screen(self, message: Mapping[str, Any]) -> str | None:
        """
        @return: why an OFFER or ACK is refused (see
            L{gatewayd.link.lease.refuseOffer}), after logging it; L{None}
            if it is acceptable.
        """
        from gatewayd.link.lease import refuseOffer

        lans = [
            address.network
            for name in self._lanInterfaces
            if (state := self._netlink.interfaceState(name)) is not None
            for address in state.addresses
        ]
        reason = refuseOffer(message, lans)
        if reason is not None:
            self._error = ERROR_IP_CONFIGURATION
            self.log.warn(
                "WAN link {interface}: refused a DHCP offer from {server}: {reason}",
                interface=self.interface,
                server=str(message.get("options", {}).get("server_id", "?")),
                reason=reason,
            )
        return reason

    def leaseBound(self, ack: Mapping[str, Any], how: str) -> None:
        """
        Apply a granted or extended lease: replace the old address if it
        changed, (re)apply address, routes and rule, then report it.
        """
        try:
            lease = leaseFromAck(ack, self._clock.seconds())
        except MalformedDHCP as e:
            self.log.warn(
                "WAN link {interface}: ignored an unusable DHCPACK: {why}",
                interface=self.interface,
                why=str(e),
            )
            return
        old, new = self._applied, self._addressing(lease)
        self._expiry.hold(lease)
        self._error = None
        if old is not None and old != new:
            self.log.info(
                "WAN link {interface}: the DHCP lease changed from {old} to {new}",
                interface=self.interface,
                old=str(old.address),
                new=str(new.address),
            )
        self.log.info(
            "WAN link {interface}: DHCP lease {address} {how} from {server}, "
            "gateway {gateway}, {seconds} s",
            interface=self.interface,
            address=str(lease.address),
            how=how,
            server=str(lease.server),
            gateway=str(lease.gateway),
            seconds=lease.leaseTime,
        )

        async def apply() -> None:
            if old is not None and old != new:
                await old.remove(self._netlink, address=old.address != new.address)
            await new.apply(self._netlink)

        def applied(_: object) -> None:
            self._applied, self._appliedFor = new, lease
            self._confirmed = True
            self._report()

        def failed(failure: Failure) -> None:
            self._error = ERROR_IP_CONFIGURATION
            self._logFailure(failure, "Applying the DHCP lease of")
            self._report()

        self._kernel(apply).addCallbacks(applied, failed)

    def leaseLost(self, why: str) -> None:
        """
        The server refused the lease (NAK) or it ended: remove the address
        and routes; the client starts over.
        """
        if self._applied is None and self._expiry.lease is None:
            return
        self.log.warn(
            "WAN link {interface}: DHCP lease {address} lost ({why})",
            interface=self.interface,
            address=str(self._applied.address) if self._applied else "?",
            why=why,
        )
        self._expiry.release()
        self._error = ERROR_ISP_DISCONNECT
        self._forget()

    # Inside.

    def _expired(self, lease: Lease) -> None:
        self.leaseLost("expired")

    def _addressing(self, lease: Lease) -> WANAddressing:
        return WANAddressing(self.interface, lease.address, lease.gateway, self._table)

    def _carrier(self) -> bool:
        state = self._state
        return state is not None and state.up and state.carrier

    def _interfaceChanged(self, state: InterfaceState | None) -> None:
        had = self._carrier()
        self._state = state
        now = self._carrier()
        if had and not now:
            self.log.warn("WAN link {interface}: carrier lost", interface=self.interface)
            self._confirmed = False
            if self._session is not None:
                self._stopSession(release=False).addErrback(self._logFailure, "Pausing")
        elif now and not had and self._wanted:
            self.log.info("WAN link {interface}: carrier back", interface=self.interface)
            self._startSession()
        self._report()

    def _startSession(self) -> None:
        def start(_: object) -> None:
            if self._session is not None or not self._wanted or not self._carrier():
                return
            self._leaseFile.parent().makedirs(ignoreExistingDirectory=True)
            self._session = self._newSession(self, self.interface, self._settings, self._leaseFile)

        self._sessionOps.addCallback(start).addErrback(self._logFailure, "Starting the DHCP client of")

    def _stopSession(self, release: bool) -> Deferred[None]:
        done: Deferred[None] = Deferred()

        def stop(_: object) -> Deferred[None] | None:
            session, self._session = self._session, None
            self._confirmed = False
            if session is None:
                return None
            return session.stop(release)

        self._sessionOps.addCallback(stop).addErrback(
            self._logFailure, "Stopping the DHCP client of"
        ).addBoth(lambda _: done.callback(None))
        return done

    def _forget(self, restore: bool = False) -> Deferred[None]:
        """
        Remove the applied lease's address, routes and rule and the lease
        file; with C{restore}, set the interface down again if the link set
        it up.
        """
        applied, self._applied, self._appliedFor = self._applied, None, None
        self._confirmed = False
        try:
            self._leaseFile.remove()
        except FileNotFoundError:
            pass
        except OSError as e:
            self.log.warn("Could not remove {path}: {why}", path=self._leaseFile.path, why=e)
        wasUp = self._wasUp

        async def remove() -> None:
            if applied is not None:
                await applied.remove(self._netlink)
            if restore and wasUp is False:
                await self._netlink.setLinkUp(self.interface, False)

        self._report()
        return self._kernel(remove).addErrback(self._logFailure, "Removing the DHCP lease of")

    def _kernel(self, work: Callable[[], Any]) -> Deferred[None]:
        """
        Run C{work} (an async function) after the previous kernel change.
        """
        done: Deferred[None] = Deferred()

        def run(_: object) -> Deferred[None]:
            return Deferred.fromCoroutine(work())

        self._kernelOps.addCallback(run).addBoth(
            lambda result: (done.errback(result) if isinstance(result, Failure) else done.callback(None))
        )
        return done

    def _report(self) -> None:
        carrier = self._carrier()
        lease = self._appliedFor
        if carrier and self._confirmed and self._wanted and lease is not None:
            self._setStatus(
                LinkStatus(
                    carrier=True,
                    address=lease.address,
                    gateway=lease.gateway,
                    dns=lease.dns,
                    lease=lease.times(),
                )
            )
        else:
            self._setStatus(LinkStatus(carrier=carrier, error=self._error if self._wanted else None))

    def _loadLease(self) -> Lease | None:
        try:
            data = self._leaseFile.getContent()
        except OSError:
            return None
        return loadLeaseFile(data, self._clock.seconds())

    def _logFailure(self, failure: Failure, what: str) -> None:
        self.log.failure(
            "{what} WAN link {interface} failed", failure, what=what, interface=self.interface
        )


class PyrouteSession:
    """
    One run of pyroute2's C{AsyncDHCPClient} as an asyncio task, from
    C{start} to C{stop}: it bootstraps (INIT, or INIT-REBOOT from the lease
    file), and tells its L{LeaseEvents} what happens.
    """

    log = Logger()

    def __init__(
        self, events: LeaseEvents, interface: str, settings: DHCPSettings, leaseFile: FilePath
    ) -> None:
        self._events = events
        self._interface = interface
        self._settings = settings
        self._leaseFile = leaseFile
        self._release = False
        self._active = True
        self._stop = asyncio.Event()
        self._client: Any = None
        future = asyncio.ensure_future(self._run())
        self._done: Deferred[None] = Deferred.fromFuture(future)
        self._done.addErrback(self._failed)

    def _failed(self, failure: Failure) -> None:
        if self._active:
            self.log.failure(
                "The DHCP client of {interface} failed", failure, interface=self._interface
            )

    async def _run(self) -> None:
        from pyroute2.dhcp.client import ClientConfig
        from pyroute2.dhcp.hooks import Trigger, hook

        session = self

        def tell(f: Callable[[], None]) -> None:
            if session._active:
                f()

        def tracking(trigger: Any, name: str) -> Any:
            @hook(trigger)
            async def track(lease: Any) -> None:
                tell(lambda: self._events.leaseBound(lease.ack, name))

            return track

        @hook(Trigger.UNBOUND)
        async def unbound(lease: Any) -> None:
            tell(lambda: self._events.leaseLost("nak"))

        @hook(Trigger.EXPIRED)
        async def expired(lease: Any) -> None:
            tell(lambda: self._events.leaseLost("expired"))

        config = ClientConfig(
            interface=self._interface,
            lease_type=_leaseType(self._leaseFile),
            hooks=[
                tracking(Trigger.BOUND, "bound"),
                tracking(Trigger.RENEWED, "renewed"),
                tracking(Trigger.REBOUND, "rebound"),
                unbound,
                expired,
            ],
            handle_signals=False,
            write_pidfile=False,
            release=False,
            client_id=self._settings.clientId,
            host_name=self._settings.hostname,
            vendor_id=None,
        )
        client = self._client = _screeningClient()(config, self._events)
        async with client:
            await client.bootstrap()
            await self._stop.wait()
            # Last: __aexit__ sends the RELEASE (and runs the UNBOUND hooks,
            # which no longer reach the link).
            client.config.release = self._release

    def stop(self, release: bool) -> Deferred[None]:
        """
        Stop the client; with C{release}, send a DHCPRELEASE first.

        @return: a L{Deferred} that fires once the client has stopped.
        """
        self._release = release
        self._active = False
        self._stop.set()
        d: Deferred[None] = Deferred()
        self._done.addBoth(lambda _: d.callback(None))
        return d

    def renew(self) -> Deferred[None]:
        """
        Send a REQUEST in RENEWING state now, if bound.
        """
        client = self._client
        if client is None:
            return succeed(None)
        return Deferred.fromFuture(asyncio.ensure_future(client._renew()))


def _leaseType(path: FilePath) -> type:
    """
    @return: pyroute2's C{JSONFileLease}, storing its file at C{path}
        instead of the working directory.
    """
    from pathlib import Path

    from pyroute2.dhcp.leases import JSONFileLease

    where = Path(path.path)
    return type(
        "GatewaydLease",
        (JSONFileLease,),
        {"_get_path": classmethod(lambda cls, interface: where)},
    )


_CLIENT: list[type] = []


def _screeningClient() -> type:
    """
    @return: pyroute2's client with gatewayd's checks: malformed packets
        dropped at the socket, OFFERs and ACKs screened by the link.
    """
    if _CLIENT:
        return _CLIENT[0]
    from pyroute2.dhcp import fsm
    from pyroute2.dhcp.client import AsyncDHCPClient
    from pyroute2.dhcp.dhcp4socket import AsyncDHCP4Socket

    from gatewayd.link.lease import decodePacket

    log = Logger(namespace="gatewayd.link.dhcp")

    class ScreeningSocket(AsyncDHCP4Socket):
        async def get(self) -> Any:
            while True:
                raw = await self.loop.sock_recv(self, 4096)
                try:
                    return decodePacket(raw)
                except MalformedDHCP as e:
                    log.info(
                        "Dropped a malformed DHCP packet on {interface}: {why}",
                        interface=self.ifname,
                        why=str(e),
                    )

    class ScreeningClient(AsyncDHCPClient):
        def __init__(self, config: Any, events: LeaseEvents) -> None:
            super().__init__(config)
            self._sock = ScreeningSocket(config.interface)
            self._events = events

        async def offer_received(self, msg: Any) -> None:
            if self.state == fsm.State.SELECTING and self._events.screen(msg.dhcp) is not None:
                return
            await super().offer_received(msg)

        async def ack_received(self, msg: Any) -> None:
            if self._events.screen(msg.dhcp) is not None:
                return
            await super().ack_received(msg)

    _CLIENT.append(ScreeningClient)
    return ScreeningClient


@implementer(IPlugin, ILinkType)
class DHCPLinkType:
    """
    The C{dhcp} link type.
    """

    name = "dhcp"
    description = "The WAN address from the ISP's DHCP server."

    def checkConfig(self, config: Mapping[str, object]) -> DHCPSettings:
        """
        Check the C{link} table: C{client_id}, C{hostname},
        C{release_on_stop}, all optional.

        @raise ConfigError: naming the key relative to the C{link} table.
        """
        checkKeys(config, {"client_id", "hostname", "release_on_stop"})
        clientId = config.get("client_id")
        if clientId is not None and (
            not isinstance(clientId, str) or not 1 <= len(clientId.encode()) <= 254
        ):
            raise ConfigError("client_id", f"expected a string of 1-254 bytes; got {describe(clientId)}")
        hostname = config.get("hostname")
        if hostname is not None and (
            not isinstance(hostname, str)
            or not 1 <= len(hostname) <= 63
            or not all(c.isascii() and (c.isalnum() or c in "-.") for c in hostname)
        ):
            raise ConfigError(
                "hostname", f"expected a host name (1-63 of a-z, 0-9, '-', '.'); got {describe(hostname)}"
            )
        release = config.get("release_on_stop", False)
        if not isinstance(release, bool):
            raise ConfigError("release_on_stop", f"expected true or false; got {describe(release)}")
        return DHCPSettings(
            clientId=clientId.encode() if clientId is not None else None,
            hostname=hostname,
            releaseOnStop=release,
        )

    def requiredCapabilities(self, settings: object) -> tuple[str, ...]:
        """
        @return: C{CAP_NET_ADMIN} (addresses, routes) and C{CAP_NET_RAW}
            (the client's packet socket).
        """
        return ("CAP_NET_ADMIN", "CAP_NET_RAW")

    def buildLink(self, context: LinkContext) -> DHCPLink:
        """
        @return: an unstarted L{DHCPLink}, its lease file in
            C{context.stateDir}.
        """
        settings = context.settings
        if not isinstance(settings, DHCPSettings):
            raise TypeError(f"expected DHCPSettings, got {settings!r}")
        return DHCPLink(
            context.interface,
            context.netlink,
            context.reactor,
            settings,
            context.stateDir.child(f"dhcp-{context.interface}.lease.json"),
            context.routingTable,
            context.onStop,
            lanInterfaces=context.lanInterfaces,
        )
