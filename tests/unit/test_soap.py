"""
Tests for L{gatewayd.upnp.soap}: the bytes real control points send, and
every fault.
"""

from __future__ import annotations

from ipaddress import IPv4Interface

from lxml import etree
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from gatewayd.interfaces import LANAddress
from gatewayd.upnp.http import LANPolicy, makeSite
from gatewayd.upnp.soap import (
    SOAPACTION_FORMS,
    MalformedSOAPAction,
    Requester,
    parseEnvelope,
    parseSOAPAction,
)
from gatewayd.errors import InvalidArgs

from .test_description import FakeWANIPConnection, buildTree, wanDevice

IP1 = "urn:schemas-upnp-org:service:WANIPConnection:1"
IP2 = "urn:schemas-upnp-org:service:WANIPConnection:2"
CONTROL = "urn:schemas-upnp-org:control-1-0"
ENV = "{http://schemas.xmlsoap.org/soap/envelope/}"


def lanSite(connection: FakeWANIPConnection | None = None) -> Site:
    """
    The whole site for the two-WAN tree, serving 127.0.0.1:5000.
    """
    lan = LANPolicy()
    lan.setAddresses([LANAddress("lo", 1, IPv4Interface("127.0.0.1/8"))], 5000)
    root = buildTree(wanDevice("isp1", connection), wanDevice("isp2"))
    return makeSite(root, lan, MemoryReactorClock())


def http(site: Site, raw: bytes, peer: str = "127.0.0.1") -> bytes:
    address = IPv4Address("TCP", peer, 40000)
    channel = site.buildProtocol(address)
    channel.makeConnection(transport := StringTransport(peerAddress=address))
    channel.dataReceived(raw)
    return transport.value()


def split(response: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """
    @return: status, headers (lower-cased names), body.
    """
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def post(
    body: bytes | str,
    soapAction: bytes | None,
    path: bytes = b"/ctl/isp1/WANIPConn1",
    userAgent: bytes = b"Linux/6.1 UPnP/1.1 MiniUPnPc/2.2.4",
) -> bytes:
    if isinstance(body, str):
        body = body.encode("utf-8")
    head = [
        b"POST " + path + b" HTTP/1.1",
        b"Host: 127.0.0.1:5000",
        b"User-Agent: " + userAgent,
        b"Content-Length: %d" % (len(body),),
        b'Content-Type: text/xml; charset="utf-8"',
    ]
    if soapAction is not None:
        head.append(b"SOAPAction: " + soapAction)
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def envelope(urn: str, action: str, arguments: str = "") -> str:
    return (
        '<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
        's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
        f'<u:{action} xmlns:u="{urn}">{arguments}</u:{action}></s:Body></s:Envelope>\r\n'
    )


def call(urn: str, action: str, arguments: str = "", site: Site | None = None) -> bytes:
    return http(
        site or lanSite(), post(envelope(urn, action, arguments), f'"{urn}#{action}"'.encode())
    )


def specific(port: str = "8080", protocol: str = "TCP", remote: str = "") -> str:
    return (
        f"<NewRemoteHost>{remote}</NewRemoteHost><NewExternalPort>{port}</NewExternalPort>"
        f"<NewProtocol>{protocol}</NewProtocol>"
    )


def outArguments(response: bytes, urn: str, action: str) -> dict[str, str]:
    status, headers, body = split(response)
    if status != 200:
        raise AssertionError(response)
    document = etree.fromstring(body)
    answer = document.find(f"{ENV}Body/{{{urn}}}{action}Response")
    if answer is None:
        raise AssertionError(body)
    return {child.tag: child.text or "" for child in answer}


def faultCode(response: bytes) -> int:
    status, headers, body = split(response)
    if status != 500:
        raise AssertionError(response)
    document = etree.fromstring(body)
    return int(document.findtext(f".//{{{CONTROL}}}errorCode"))


MINIUPNPC = (
    b"POST /ctl/isp1/WANIPConn1 HTTP/1.1\r\n"
    b"Host: 127.0.0.1:5000\r\n"
    b"User-Agent: Debian/12 UPnP/1.1 MiniUPnPc/2.2.4\r\n"
    b"Content-Length: 285\r\n"
    b'Content-Type: text/xml; charset="utf-8"\r\n'
    b'SOAPAction: "urn:schemas-upnp-org:service:WANIPConnection:1#GetExternalIPAddress"\r\n'
    b"Connection: close\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Pragma: no-cache\r\n"
    b"\r\n"
    b'<?xml version="1.0"?>\r\n'
    b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    b's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
    b'<u:GetExternalIPAddress xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">'
    b"</u:GetExternalIPAddress></s:Body></s:Envelope>\r\n"
)

ASYNC_UPNP_CLIENT_BODY = (
    b'<?xml version="1.0"?><s:Envelope s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"'
    b' xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
    b'<u:GetSpecificPortMappingEntry xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2">'
    b"<NewRemoteHost></NewRemoteHost>\n<NewExternalPort>8080</NewExternalPort>\n<NewProtocol>TCP</NewProtocol>"
    b"</u:GetSpecificPortMappingEntry></s:Body></s:Envelope>"
)
ASYNC_UPNP_CLIENT = (
    b"POST /ctl/isp1/WANIPConn1 HTTP/1.1\r\n"
    b"Host: 127.0.0.1:5000\r\n"
    b'SOAPAction: "urn:schemas-upnp-org:service:WANIPConnection:2#GetSpecificPortMappingEntry"\r\n'
    b'Content-Type: text/xml; charset="utf-8"\r\n'
    b"Accept: */*\r\n"
    b"Accept-Encoding: gzip, deflate\r\n"
    b"User-Agent: Python/3.11 aiohttp/3.9.5\r\n"
    b"Content-Length: %d\r\n\r\n" % (len(ASYNC_UPNP_CLIENT_BODY),)
) + ASYNC_UPNP_CLIENT_BODY

GUPNP_BODY = (
    b'<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" '
    b's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>'
    b'<u:GetStatusInfo xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2"></u:GetStatusInfo>'
    b"</s:Body></s:Envelope>"
)
GUPNP = (
    b"POST /ctl/isp1/WANIPConn1 HTTP/1.1\r\n"
    b"Host: 127.0.0.1:5000\r\n"
    b"Accept-Encoding: gzip, deflate\r\n"
    b"Accept-Language: en-us;q=1, en;q=0.5\r\n"
    b"User-Agent: gupnp-universal-cp GUPnP/1.6.6 DLNADOC/1.50\r\n"
    b'SOAPAction: "urn:schemas-upnp-org:service:WANIPConnection:2#GetStatusInfo"\r\n'
    b'Content-Type: text/xml; charset="utf-8"\r\n'
    b"Connection: Keep-Alive\r\n"
    b"Content-Length: %d\r\n\r\n" % (len(GUPNP_BODY),)
) + GUPNP_BODY

WINDOWS_BODY = (
    b'<?xml version="1.0"?>\r\n<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" '
    b'SOAP-ENV:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">\r\n<SOAP-ENV:Body>\r\n'
    b'<m:QueryStateVariable xmlns:m="urn:schemas-upnp-org:control-1-0">\r\n'
    b"<m:varName>%s</m:varName>\r\n</m:QueryStateVariable>\r\n</SOAP-ENV:Body>\r\n</SOAP-ENV:Envelope>\r\n"
)


def windows(variable: bytes) -> bytes:
    body = WINDOWS_BODY % (variable,)
    return (
        b"POST /ctl/isp1/WANIPConn1 HTTP/1.1\r\n"
        b"Cache-Control: no-cache\r\n"
        b"Connection: Keep-Alive\r\n"
        b"Pragma: no-cache\r\n"
        b'Content-Type: text/xml; charset="utf-8"\r\n'
        b"User-Agent: Microsoft-Windows/10.0 UPnP/1.0\r\n"
        b'SOAPAction: "urn:schemas-upnp-org:control-1-0#QueryStateVariable"\r\n'
        b"Content-Length: %d\r\n"
        b"Host: 127.0.0.1:5000\r\n\r\n" % (len(body),)
    ) + body


class SOAPActionTests(SynchronousTestCase):
    def test_everyForm(self) -> None:
        """
        Every SOAPACTION form real clients send names the same action.
        """
        for form in SOAPACTION_FORMS:
            self.assertEqual(
                parseSOAPAction(form.example), (IP1, "GetExternalIPAddress"), form.name
            )

    def test_quoted(self) -> None:
        """
        The UDA form, double-quoted (miniupnpc, Windows), is accepted.
        """
        self.assertEqual(parseSOAPAction(b'"urn:a:service:B:1#C"'), ("urn:a:service:B:1", "C"))

    def test_unquoted(self) -> None:
        """
        Unquoted values (UDA 1.0 control points) are accepted.
        """
        self.assertEqual(parseSOAPAction(b"urn:a:service:B:1#C"), ("urn:a:service:B:1", "C"))

    def test_padded(self) -> None:
        """
        Blanks around the value or inside the quotes are ignored.
        """
        self.assertEqual(parseSOAPAction(b' " urn:a:service:B:1#C "\t'), ("urn:a:service:B:1", "C"))

    def test_hostile(self) -> None:
        """
        A lone or unbalanced quote (CVE-2026-5720 crashed miniupnpd with one),
        an empty value, or a value that is not <urn>#<action> is refused.
        """
        for value in [
            None,
            b"",
            b" ",
            b'"',
            b'""',
            b'"urn:a:service:B:1#C',
            b'urn:a:service:B:1#C"',
            b'"urn:a:service:B:1"#C"',
            b"urn:a:service:B:1",
            b"urn:a:service:B:1#",
            b"#C",
            b"urn:a:service:B:1#C D",
            b"urn:a:service:B:1#C#D",
            b"\xff",
            b"urn:" + b"a" * 400 + b"#C",
        ]:
            self.assertRaises(MalformedSOAPAction, parseSOAPAction, value)


class EnvelopeTests(SynchronousTestCase):
    def test_dtdRefused(self) -> None:
        """
        Any body with a document type declaration is refused, even a harmless
        one.
        """
        body = b'<!DOCTYPE s:Envelope []><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><a/></s:Body></s:Envelope>'
        self.assertRaises(InvalidArgs, parseEnvelope, body)

    def test_notEnvelope(self) -> None:
        """
        A body that is not an Envelope with a Body holding one element is
        refused.
        """
        for body in [
            b"",
            b"<a/>",
            b"not xml",
            b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"/>',
            b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>',
            b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><a/><b/></s:Body></s:Envelope>',
        ]:
            self.assertRaises(InvalidArgs, parseEnvelope, body)


class RealClientTests(SynchronousTestCase):
    def test_miniupnpc(self) -> None:
        """
        upnpc's GetExternalIPAddress, a WANIPConnection:1 request, gets the
        address in a :1 response with every header UDA wants.
        """
        connection = FakeWANIPConnection()
        response = http(lanSite(connection), MINIUPNPC)
        status, headers, body = split(response)
        self.assertEqual(status, 200)
        self.assertEqual(headers[b"content-type"], b'text/xml; charset="utf-8"')
        self.assertEqual(int(headers[b"content-length"]), len(body))
        self.assertEqual(headers[b"ext"], b"")
        self.assertIn(b"UPnP/1.1 gatewayd/", headers[b"server"])
        self.assertEqual(
            outArguments(response, IP1, "GetExternalIPAddress"),
            {"NewExternalIPAddress": "203.0.113.7"},
        )
        self.assertIn(b'xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1"', body)
        [(_, requester, _)] = connection.calls
        self.assertEqual(requester, Requester("127.0.0.1", "Debian/12 UPnP/1.1 MiniUPnPc/2.2.4"))

    def test_requesterIsThePeer(self) -> None:
        """
        The requester's address is the TCP peer, whatever the request says.
        """
        connection = FakeWANIPConnection()
        raw = MINIUPNPC.replace(
            b"Host: 127.0.0.1:5000", b"Host: 127.0.0.1:5000\r\nX-Forwarded-For: 10.9.9.9"
        )
        http(lanSite(connection), raw, peer="127.0.0.55")
        self.assertEqual(connection.calls[0][1].address, "127.0.0.55")

    def test_asyncUpnpClient(self) -> None:
        """
        Home Assistant's client (arguments separated by newlines, answered
        through a Deferred) gets every out argument in SCPD order, escaped.
        """
        response = http(lanSite(), ASYNC_UPNP_CLIENT)
        out = outArguments(response, IP2, "GetSpecificPortMappingEntry")
        self.assertEqual(
            list(out.items()),
            [
                ("NewInternalPort", "80"),
                ("NewInternalClient", "192.168.1.20"),
                ("NewEnabled", "1"),
                ("NewPortMappingDescription", "web <&> server"),
                ("NewLeaseDuration", "3600"),
            ],
        )

    def test_gupnp(self) -> None:
        """
        GUPnP's GetStatusInfo, answered by a coroutine, gets its values.
        """
        out = outArguments(http(lanSite(), GUPNP), IP2, "GetStatusInfo")
        self.assertEqual(
            out,
            {
                "NewConnectionStatus": "Connected",
                "NewLastConnectionError": "ERROR_NONE",
                "NewUptime": "42",
            },
        )

    def test_windowsQueryStateVariable(self) -> None:
        """
        Windows asks for ConnectionStatus with the deprecated
        QueryStateVariable (its own prefixes, qualified varName) and gets it.
        """
        out = outArguments(
            http(lanSite(), windows(b"ConnectionStatus")), CONTROL, "QueryStateVariable"
        )
        self.assertEqual(out, {"return": "Connected"})

    def test_queryStateVariableUnknown(self) -> None:
        """
        QueryStateVariable for a variable the service does not have is 404
        Invalid Var.
        """
        self.assertEqual(faultCode(http(lanSite(), windows(b"NoSuchThing"))), 404)

    def test_queryStateVariableUnsupported(self) -> None:
        """
        A service whose implementation does not answer QueryStateVariable
        says 401 Invalid Action.
        """
        raw = windows(b"PhysicalLinkStatus").replace(
            b"/ctl/isp1/WANIPConn1", b"/ctl/isp1/WANCommonIFC1"
        )
        self.assertEqual(faultCode(http(lanSite(), raw)), 401)

    def test_argumentsInAnyOrder(self) -> None:
        """
        Arguments are matched by name, whatever order the client used.
        """
        response = call(
            IP2,
            "GetSpecificPortMappingEntry",
            "<NewProtocol>TCP</NewProtocol><NewExternalPort> 8080 </NewExternalPort><NewRemoteHost/>",
        )
        self.assertEqual(
            outArguments(response, IP2, "GetSpecificPortMappingEntry")["NewInternalPort"], "80"
        )

    def test_otherServices(self) -> None:
        """
        WANCommonInterfaceConfig and Layer3Forwarding answer on their own
        control URLs.
        """
        urn = "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1"
        raw = post(
            envelope(urn, "GetCommonLinkProperties"),
            f'"{urn}#GetCommonLinkProperties"'.encode(),
            b"/ctl/isp2/WANCommonIFC1",
        )
        self.assertEqual(
            outArguments(http(lanSite(), raw), urn, "GetCommonLinkProperties")[
                "NewPhysicalLinkStatus"
            ],
            "Up",
        )
        urn = "urn:schemas-upnp-org:service:Layer3Forwarding:1"
        raw = post(
            envelope(urn, "GetDefaultConnectionService"),
            f'"{urn}#GetDefaultConnectionService"'.encode(),
            b"/ctl/L3F",
        )
        self.assertIn(
            "NewDefaultConnectionService",
            outArguments(http(lanSite(), raw), urn, "GetDefaultConnectionService"),
        )

    def test_v2ActionThroughV2(self) -> None:
        """
        AddAnyPortMapping works for a client that asked WANIPConnection:2,
        and its arguments reach the service converted.
        """
        connection = FakeWANIPConnection()
        arguments = (
            "<NewRemoteHost></NewRemoteHost><NewExternalPort>5000</NewExternalPort><NewProtocol>UDP</NewProtocol>"
            "<NewInternalPort>5000</NewInternalPort><NewInternalClient>127.0.0.1</NewInternalClient>"
            "<NewEnabled>true</NewEnabled><NewPortMappingDescription>game</NewPortMappingDescription>"
            "<NewLeaseDuration>0</NewLeaseDuration>"
        )
        out = outArguments(
            call(IP2, "AddAnyPortMapping", arguments, lanSite(connection)), IP2, "AddAnyPortMapping"
        )
        self.assertEqual(out, {"NewReservedPort": "5000"})
        self.assertEqual(
            connection.calls[0][2],
            {
                "NewRemoteHost": "",
                "NewExternalPort": 5000,
                "NewProtocol": "UDP",
                "NewInternalPort": 5000,
                "NewInternalClient": "127.0.0.1",
                "NewEnabled": True,
                "NewPortMappingDescription": "game",
                "NewLeaseDuration": 0,
            },
        )


class FaultTests(SynchronousTestCase):
    def test_faultFormat(self) -> None:
        """
        A fault is HTTP 500 with s:Client, UPnPError and the detail in the
        control namespace, exactly as UDA shows it.
        """
        response = call(IP1, "Frobnicate")
        status, headers, body = split(response)
        self.assertEqual(status, 500)
        self.assertEqual(headers[b"content-type"], b'text/xml; charset="utf-8"')
        self.assertEqual(int(headers[b"content-length"]), len(body))
        self.assertEqual(headers[b"ext"], b"")
        document = etree.fromstring(body)
        fault = document.find(f"{ENV}Body/{ENV}Fault")
        self.assertEqual(
            [(etree.QName(c).localname, etree.QName(c).namespace) for c in fault],
            [("faultcode", None), ("faultstring", None), ("detail", None)],
        )
        self.assertEqual(fault.findtext("faultcode"), "s:Client")
        self.assertEqual(fault.findtext("faultstring"), "UPnPError")
        self.assertEqual(
            fault.findtext(f"detail/{{{CONTROL}}}UPnPError/{{{CONTROL}}}errorCode"), "401"
        )
        self.assertEqual(
            fault.findtext(f"detail/{{{CONTROL}}}UPnPError/{{{CONTROL}}}errorDescription"),
            "Invalid Action",
        )
        self.assertEqual(
            document.get(f"{ENV}encodingStyle"), "http://schemas.xmlsoap.org/soap/encoding/"
        )

    def test_noSOAPAction(self) -> None:
        """
        A POST without SOAPACTION is 400 Bad Request.
        """
        status, headers, body = split(
            http(lanSite(), post(envelope(IP1, "GetExternalIPAddress"), None))
        )
        self.assertEqual((status, body), (400, b""))
        self.assertIn(b"gatewayd", headers[b"server"])

    def test_loneQuote(self) -> None:
        """
        A SOAPACTION of one quote character is 400, and nothing breaks.
        """
        status, _, _ = split(http(lanSite(), post(envelope(IP1, "GetExternalIPAddress"), b'"')))
        self.assertEqual(status, 400)

    def test_unknownAction(self) -> None:
        """
        An action the service does not have is 401 Invalid Action.
        """
        self.assertEqual(faultCode(call(IP2, "Frobnicate")), 401)

    def test_unimplementedAction(self) -> None:
        """
        An action of the spec that this implementation does not provide (so
        the SCPD does not list it) is 401.
        """
        self.assertEqual(faultCode(call(IP2, "ForceTermination")), 401)

    def test_wrongService(self) -> None:
        """
        Calling WANCommonInterfaceConfig's action on WANIPConnection's control
        URL is 401, as is a service version above the implemented one.
        """
        urn = "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1"
        self.assertEqual(faultCode(call(urn, "GetCommonLinkProperties")), 401)
        self.assertEqual(
            faultCode(
                call("urn:schemas-upnp-org:service:WANIPConnection:3", "GetExternalIPAddress")
            ),
            401,
        )
        self.assertEqual(
            faultCode(call("urn:example-com:service:WANIPConnection:1", "GetExternalIPAddress")),
            401,
        )

    def test_v2OnlyActionThroughV1(self) -> None:
        """
        A v1 client asking for a v2-only action gets 401: its SCPD does not
        list it.
        """
        connection = FakeWANIPConnection()
        self.assertEqual(faultCode(call(IP1, "AddAnyPortMapping", "", lanSite(connection))), 401)
        self.assertEqual(connection.calls, [])

    def test_bodyDisagrees(self) -> None:
        """
        A body whose action element is not the one SOAPACTION names is 401.
        """
        raw = post(envelope(IP1, "GetStatusInfo"), f'"{IP1}#GetExternalIPAddress"'.encode())
        self.assertEqual(faultCode(http(lanSite(), raw)), 401)
        raw = post(envelope(IP2, "GetExternalIPAddress"), f'"{IP1}#GetExternalIPAddress"'.encode())
        self.assertEqual(faultCode(http(lanSite(), raw)), 401)

    def test_missingArgument(self) -> None:
        """
        A missing argument is 402 and the service is not called.
        """
        connection = FakeWANIPConnection()
        arguments = "<NewRemoteHost></NewRemoteHost><NewExternalPort>8080</NewExternalPort>"
        self.assertEqual(
            faultCode(call(IP2, "GetSpecificPortMappingEntry", arguments, lanSite(connection))), 402
        )
        self.assertEqual(connection.calls, [])

    def test_extraArgument(self) -> None:
        """
        An argument the action does not take is 402.
        """
        self.assertEqual(
            faultCode(call(IP2, "GetSpecificPortMappingEntry", specific() + "<NewX>1</NewX>")), 402
        )
        self.assertEqual(
            faultCode(call(IP2, "GetExternalIPAddress", "<NewExternalIPAddress/>")), 402
        )

    def test_duplicateArgument(self) -> None:
        """
        An argument given twice is 402.
        """
        arguments = specific() + "<NewProtocol>UDP</NewProtocol>"
        self.assertEqual(faultCode(call(IP2, "GetSpecificPortMappingEntry", arguments)), 402)

    def test_mistypedArgument(self) -> None:
        """
        A port that is not a ui2 number is 402.
        """
        for port in ["eighty", "65536", "-1", ""]:
            self.assertEqual(
                faultCode(call(IP2, "GetSpecificPortMappingEntry", specific(port=port))), 402, port
            )

    def test_foreignNamespaceArgument(self) -> None:
        """
        An argument in another namespace than unqualified or the action's
        is 402.
        """
        arguments = specific().replace(
            "<NewProtocol>TCP</NewProtocol>", '<x:NewProtocol xmlns:x="urn:x">TCP</x:NewProtocol>'
        )
        self.assertEqual(faultCode(call(IP2, "GetSpecificPortMappingEntry", arguments)), 402)

    def test_outOfRange(self) -> None:
        """
        A protocol outside the allowed list is 601.
        """
        self.assertEqual(
            faultCode(call(IP2, "GetSpecificPortMappingEntry", specific(protocol="SCTP"))), 601
        )

    def test_stringTooLong(self) -> None:
        """
        An over-long string argument is 605.
        """
        self.assertEqual(
            faultCode(call(IP2, "GetSpecificPortMappingEntry", specific(remote="a" * 2000))), 605
        )

    def test_serviceError(self) -> None:
        """
        A UPnPError raised by the service becomes its fault code.
        """
        self.assertEqual(
            faultCode(call(IP2, "GetSpecificPortMappingEntry", specific(port="9"))), 714
        )

    def test_unexpectedException(self) -> None:
        """
        A bug in the service is 501 Action Failed for the client and a
        logged failure for the operator.
        """
        connection = FakeWANIPConnection()
        connection.fail = ZeroDivisionError("bug")
        self.assertEqual(faultCode(call(IP1, "GetExternalIPAddress", "", lanSite(connection))), 501)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_missingOutValue(self) -> None:
        """
        A service forgetting an out value is 501 and a logged failure,
        never a half answer.
        """
        response = call(IP1, "GetNATRSIPStatus")
        self.assertEqual(faultCode(response), 501)
        self.assertNotIn(b"NewRSIPAvailable", response)
        self.assertEqual(len(self.flushLoggedErrors()), 1)

    def test_malformedXML(self) -> None:
        """
        A body that is not XML is 402.
        """
        raw = post(b"<s:Envelope", f'"{IP1}#GetExternalIPAddress"'.encode())
        self.assertEqual(faultCode(http(lanSite(), raw)), 402)

    def test_getIsNotAllowed(self) -> None:
        """
        GET on a control URL is 405 with Allow: POST.
        """
        raw = b"GET /ctl/isp1/WANIPConn1 HTTP/1.1\r\nHost: 127.0.0.1:5000\r\n\r\n"
        status, headers, _ = split(http(lanSite(), raw))
        self.assertEqual((status, headers[b"allow"]), (405, b"POST"))


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE s:Envelope [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
<u:GetSpecificPortMappingEntry xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2">
<NewRemoteHost>&lol9;</NewRemoteHost><NewExternalPort>8080</NewExternalPort><NewProtocol>TCP</NewProtocol>
</u:GetSpecificPortMappingEntry></s:Body></s:Envelope>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE s:Envelope [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> <!ENTITY net SYSTEM "http://192.0.2.1/x"> ]>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
<u:GetSpecificPortMappingEntry xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2">
<NewRemoteHost>&xxe;&net;</NewRemoteHost><NewExternalPort>8080</NewExternalPort><NewProtocol>TCP</NewProtocol>
</u:GetSpecificPortMappingEntry></s:Body></s:Envelope>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE s:Envelope SYSTEM "http://192.0.2.1/evil.dtd">
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>
<u:GetExternalIPAddress xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2"/></s:Body></s:Envelope>"""


class HostileBodyTests(SynchronousTestCase):
    def attack(self, body: bytes, action: str) -> tuple[bytes, FakeWANIPConnection, list[str]]:
        connection = FakeWANIPConnection()
        with capturedLogs() as events:
            response = http(lanSite(connection), post(body, f'"{IP2}#{action}"'.encode()))
        return response, connection, [formatEvent(e) for e in events]

    def test_billionLaughs(self) -> None:
        """
        Nested entities are never expanded: the client gets 402, the service
        is not called, and the refusal is logged.
        """
        response, connection, logs = self.attack(BILLION_LAUGHS, "GetSpecificPortMappingEntry")
        self.assertEqual(faultCode(response), 402)
        self.assertNotIn(b"lollol", response)
        self.assertEqual(connection.calls, [])
        self.assertTrue([line for line in logs if "Refused a SOAP body" in line], logs)

    def test_externalEntity(self) -> None:
        """
        An external entity (a local file, a URL) is never fetched or echoed:
        402, and a log line.
        """
        response, connection, logs = self.attack(EXTERNAL_ENTITY, "GetSpecificPortMappingEntry")
        self.assertEqual(faultCode(response), 402)
        self.assertNotIn(b"root:", response)
        self.assertNotIn(b"/etc/passwd", response)
        self.assertEqual(connection.calls, [])
        self.assertTrue([line for line in logs if "Refused a SOAP body" in line], logs)

    def test_externalDTD(self) -> None:
        """
        A body naming an external DTD is refused without fetching it.
        """
        response, connection, logs = self.attack(EXTERNAL_DTD, "GetExternalIPAddress")
        self.assertEqual(faultCode(response), 402)
        self.assertEqual(connection.calls, [])


class DisconnectTests(SynchronousTestCase):
    def test_clientLeft(self) -> None:
        """
        When the client hangs up before a slow action finishes, the action
        still completes and nothing is written to the dead connection.
        """
        connection = FakeWANIPConnection()
        connection.pending = Deferred()
        site = lanSite(connection)
        address = IPv4Address("TCP", "127.0.0.1", 40000)
        channel = site.buildProtocol(address)
        channel.makeConnection(transport := StringTransport(peerAddress=address))
        channel.dataReceived(ASYNC_UPNP_CLIENT)
        self.assertEqual(transport.value(), b"")
        channel.connectionLost(Failure(ConnectionError("gone")))
        connection.pending.callback(
            {
                "NewInternalPort": 80,
                "NewInternalClient": "192.168.1.20",
                "NewEnabled": True,
                "NewPortMappingDescription": "x",
                "NewLeaseDuration": 0,
            }
        )
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.flushLoggedErrors(), [])
