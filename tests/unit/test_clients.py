"""
Replayed client exchanges: the bytes real control points send, against a
whole gateway (see L{tests.unit.test_wanipconnection.GatewayHarness}).
"""

from __future__ import annotations

from lxml import etree

from tests.unit.test_wanipconnection import A, V1, GatewayHarness

DEVICE_NS = "urn:schemas-upnp-org:device-1-0"
SERVICE_NS = "urn:schemas-upnp-org:service-1-0"

# Windows' NAT traversal client (natupnp.dll / hnetcfg through upnp.dll).
# Based on: the request ProudNet's UPnP code builds to look like Windows 7
# (CUpnpTask::BuildUpnpRequestText_AddPortMapping / _DeletePortMapping, found
# with the code search): header order Cache-Control, Connection: Close,
# Pragma, Content-Type: text/xml; charset="utf-8", User-Agent:
# Microsoft-Windows/6.1 UPnP/1.0, quoted SOAPAction, Content-Length, Host
# last; body with SOAP-ENV and m: prefixes, every argument carrying
# xmlns:dt="urn:schemas-microsoft-com:datatypes" dt:dt="<type>", lease 0.
# QueryStateVariable's form is the one tests/unit/test_soap.py replays. The
# GET of descriptions uses the same headers plus Accept (constructed: no
# public capture of Windows' description GET was found), and the User-Agent
# Microsoft-Windows/10.0 UPnP/1.0 that miniupnpd's per-request IGD:1 switch
# (IGD-2-devices.md section 6) matches.
WINDOWS_UA = b"Microsoft-Windows/6.1 UPnP/1.0"

_DT = b' xmlns:dt="urn:schemas-microsoft-com:datatypes" dt:dt="%s"'


def windowsGet(path: bytes) -> bytes:
    return (
        b"GET " + path + b" HTTP/1.1\r\n"
        b"Cache-Control: no-cache\r\nConnection: Close\r\nPragma: no-cache\r\n"
        b"Accept: text/xml, application/xml\r\n"
        b"User-Agent: Microsoft-Windows/10.0 UPnP/1.0\r\n"
        b"Host: 192.168.1.1:5000\r\n\r\n"
    )


def windowsAction(action: str, args: list[tuple[str, bytes, bytes]]) -> bytes:
    """
    @param args: C{(name, dt type, value)} in SOAP order.
    """
    name = action.encode()
    arguments = b"".join(
        b"<%s%s>%s</%s>" % (n.encode(), _DT % t, v, n.encode()) for n, t, v in args
    )
    body = (
        b'<?xml version="1.0"?>\r\n'
        b'<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" '
        b'SOAP-ENV:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><SOAP-ENV:Body>'
        b'<m:' + name + b' xmlns:m="urn:schemas-upnp-org:service:WANIPConnection:1">'
        + arguments
        + b"</m:" + name + b"></SOAP-ENV:Body></SOAP-ENV:Envelope>"
    )
    return (
        b"POST /ctl/fibre/WANIPConn1 HTTP/1.1\r\n"
        b"Cache-Control: no-cache\r\nConnection: Close\r\nPragma: no-cache\r\n"
        b'Content-Type: text/xml; charset="utf-8"\r\n'
        b"User-Agent: " + WINDOWS_UA + b"\r\n"
        b'SOAPAction: "urn:schemas-upnp-org:service:WANIPConnection:1#' + name + b'"\r\n'
        b"Content-Length: %d\r\n"
        b"Host: 192.168.1.1:5000\r\n\r\n" % (len(body),)
    ) + body


def windowsQuery(name: bytes) -> bytes:
    body = (
        b'<?xml version="1.0"?>\r\n'
        b'<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/" '
        b'SOAP-ENV:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">\r\n<SOAP-ENV:Body>\r\n'
        b'<m:QueryStateVariable xmlns:m="urn:schemas-upnp-org:control-1-0">\r\n'
        b"<m:varName>" + name + b"</m:varName>\r\n</m:QueryStateVariable>\r\n"
        b"</SOAP-ENV:Body>\r\n</SOAP-ENV:Envelope>\r\n"
    )
    return (
        b"POST /ctl/fibre/WANIPConn1 HTTP/1.1\r\n"
        b"Cache-Control: no-cache\r\nConnection: Close\r\nPragma: no-cache\r\n"
        b'Content-Type: text/xml; charset="utf-8"\r\n'
        b"User-Agent: " + WINDOWS_UA + b"\r\n"
        b'SOAPAction: "urn:schemas-upnp-org:control-1-0#QueryStateVariable"\r\n'
        b"Content-Length: %d\r\nHost: 192.168.1.1:5000\r\n\r\n" % (len(body),)
    ) + body


class WindowsTests(GatewayHarness):
    """
    Windows (natupnp/hnetcfg) sees an IGD:1 and maps a port with v1 actions.
    """

    def test_description(self) -> None:
        """
        Windows gets the IGD:1 view: every type :1, and the SCPDs it lists
        include a WANIPConnection:1 SCPD without the v2 actions.
        """
        answer = self.http(windowsGet(b"/rootDesc.xml"))
        self.assertEqual(answer.status, 200, answer.raw)
        root = answer.xml()
        ns = {"d": DEVICE_NS}
        types = root.xpath("//d:deviceType/text() | //d:serviceType/text()", namespaces=ns)
        self.assertTrue(types)
        self.assertEqual([t for t in types if not t.endswith(":1")], [])
        self.assertIn(V1, types)
        scpds = root.xpath("//d:service/d:SCPDURL/text()", namespaces=ns)
        ipConnection = root.xpath(
            f"//d:service[d:serviceType='{V1}']/d:SCPDURL/text()", namespaces=ns
        )
        self.assertTrue(ipConnection)
        for url in scpds:
            scpd = self.http(windowsGet(url.encode()))
            self.assertEqual(scpd.status, 200, (url, scpd.raw[:200]))
            etree.fromstring(scpd.body)
        scpd = self.http(windowsGet(ipConnection[0].encode())).xml()
        actions = scpd.xpath("//s:action/s:name/text()", namespaces={"s": SERVICE_NS})
        self.assertIn("AddPortMapping", actions)
        for v2 in ("AddAnyPortMapping", "DeletePortMappingRange", "GetListOfPortMappings"):
            self.assertNotIn(v2, actions)
        variables = scpd.xpath("//s:stateVariable/s:name/text()", namespaces={"s": SERVICE_NS})
        self.assertNotIn("SystemUpdateID", variables)

    def test_actions(self) -> None:
        """
        The v1 sequence: external address, walk the table until 713, look
        for its port (714), add it with lease 0 (stored as a week), find
        it, delete it; every answer in the :1 namespace.
        """
        answer = self.http(windowsAction("GetExternalIPAddress", []))
        self.assertEqual(answer.response().tag, f"{{{V1}}}GetExternalIPAddressResponse")
        self.assertEqual(answer.out(), {"NewExternalIPAddress": "203.0.114.2"})
        index = 0
        while True:
            answer = self.http(
                windowsAction("GetGenericPortMappingEntry", [("NewPortMappingIndex", b"ui2", b"%d" % index)])
            )
            if answer.status != 200:
                break
            self.assertEqual(answer.response().tag, f"{{{V1}}}GetGenericPortMappingEntryResponse")
            index += 1
        self.assertEqual((index, answer.fault()), (1, (713, "SpecifiedArrayIndexInvalid")))
        key = [("NewRemoteHost", b"string", b""), ("NewExternalPort", b"ui2", b"3074"), ("NewProtocol", b"string", b"UDP")]
        self.assertEqual(
            self.http(windowsAction("GetSpecificPortMappingEntry", key)).fault(), (714, "NoSuchEntryInArray")
        )
        added = self.http(
            windowsAction(
                "AddPortMapping",
                key
                + [
                    ("NewInternalPort", b"ui2", b"3074"),
                    ("NewInternalClient", b"string", A.encode()),
                    ("NewEnabled", b"boolean", b"1"),
                    ("NewPortMappingDescription", b"string", b"Xbox (3074)"),
                    ("NewLeaseDuration", b"ui4", b"0"),
                ],
            )
        )
        self.assertEqual(added.status, 200, added.raw)
        self.assertEqual(added.response().tag, f"{{{V1}}}AddPortMappingResponse")
        self.assertEqual(self.kernel(), [("UDP", 3074, "", A, 3074)])
        entry = self.http(windowsAction("GetSpecificPortMappingEntry", key)).out()
        self.assertEqual(entry["NewLeaseDuration"], "604800")
        self.assertEqual(entry["NewPortMappingDescription"], "Xbox (3074)")
        self.assertEqual(self.http(windowsQuery(b"PortMappingNumberOfEntries")).out(), {"return": "2"})
        self.assertEqual(self.http(windowsQuery(b"ConnectionStatus")).out(), {"return": "Connected"})
        deleted = self.http(windowsAction("DeletePortMapping", key))
        self.assertEqual(deleted.response().tag, f"{{{V1}}}DeletePortMappingResponse")
        self.assertEqual(self.kernel(), [])

    def test_v2ActionRefused(self) -> None:
        """
        A v2-only action asked for in the :1 namespace is 401.
        """
        answer = self.http(windowsAction("GetListOfPortMappings", []))
        self.assertEqual(answer.fault(), (401, "Invalid Action"))


# A game console (PlayStation 4 / Xbox style). No public capture of a
# console's SOAP bytes was found with the search tools, so this is
# constructed from documented quirks of embedded clients: HTTP/1.0 without
# Connection or User-Agent, a Host without the port, lowercase header names,
# SOAPAction without quotes (the UDA 1.0 form; SOAPACTION_FORMS in
# gatewayd/upnp/soap.py), the v1 namespace, an empty remote host, lease 0
# (a v1 "permanent" lease) and a short description.
def console(action: str, arguments: bytes) -> bytes:
    body = (
        b'<?xml version="1.0" encoding="utf-8"?>'
        b'<s:Envelope s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/" '
        b'xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
        b'<u:' + action.encode() + b' xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">'
        + arguments
        + b"</u:" + action.encode() + b"></s:Body></s:Envelope>"
    )
    return (
        b"POST /ctl/fibre/WANIPConn1 HTTP/1.0\r\n"
        b"host: 192.168.1.1\r\n"
        b"content-type: text/xml\r\n"
        b"soapaction: urn:schemas-upnp-org:service:WANIPConnection:1#" + action.encode() + b"\r\n"
        b"content-length: %d\r\n\r\n" % (len(body),)
    ) + body


class ConsoleTests(GatewayHarness):
    """
    A game console maps its port the v1 way.
    """

    def test_addPortMapping(self) -> None:
        """
        The console's AddPortMapping (HTTP/1.0, unquoted SOAPAction, lease
        0) works: the mapping is there for a week; its external address
        and delete work too.
        """
        answer = self.http(console("GetExternalIPAddress", b""))
        self.assertEqual(answer.status, 200, answer.raw)
        self.assertEqual(answer.out(), {"NewExternalIPAddress": "203.0.114.2"})
        answer = self.http(
            console(
                "AddPortMapping",
                b"<NewRemoteHost></NewRemoteHost><NewExternalPort>9308</NewExternalPort>"
                b"<NewProtocol>UDP</NewProtocol><NewInternalPort>9308</NewInternalPort>"
                b"<NewInternalClient>192.168.1.20</NewInternalClient><NewEnabled>1</NewEnabled>"
                b"<NewPortMappingDescription>PS4 Game</NewPortMappingDescription>"
                b"<NewLeaseDuration>0</NewLeaseDuration>",
            )
        )
        self.assertEqual(answer.status, 200, answer.raw)
        self.assertTrue(answer.raw.startswith(b"HTTP/1.0 200") or answer.raw.startswith(b"HTTP/1.1 200"))
        self.assertEqual(answer.response().tag, f"{{{V1}}}AddPortMappingResponse")
        self.assertEqual(self.kernel(), [("UDP", 9308, "", A, 9308)])
        self.assertEqual(self.specific(9308, protocol="UDP").out()["NewLeaseDuration"], "604800")
        answer = self.http(
            console(
                "DeletePortMapping",
                b"<NewRemoteHost></NewRemoteHost><NewExternalPort>9308</NewExternalPort>"
                b"<NewProtocol>UDP</NewProtocol>",
            )
        )
        self.assertEqual(answer.status, 200, answer.raw)
        self.assertEqual(self.kernel(), [])


# async-upnp-client 0.49.0 on aiohttp 3.14.5, byte for byte: captured from
# UpnpAction.create_request's headers and body (async_upnp_client/client.py:
# quoted SOAPAction, Host, Content-Type: text/xml; charset="utf-8"; body
# without newlines between elements except "\n" between arguments) sent by
# AiohttpRequester to a local socket; aiohttp adds Accept, Accept-Encoding,
# User-Agent and Content-Length after them.
ASYNC_ADD = (
    b'POST /ctl/fibre/WANIPConn1 HTTP/1.1\r\nHost: 192.168.1.1:5000\r\n'
    b'SOAPAction: "urn:schemas-upnp-org:service:WANIPConnection:2#AddPortMapping"\r\n'
    b'Content-Type: text/xml; charset="utf-8"\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\n'
    b'User-Agent: Python/3.11 aiohttp/3.14.5\r\nContent-Length: 604\r\n\r\n'
    b'<?xml version="1.0"?><s:Envelope s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/" '
    b'xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><u:AddPortMapping '
    b'xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2"><NewRemoteHost></NewRemoteHost>\n'
    b'<NewExternalPort>51413</NewExternalPort>\n<NewProtocol>TCP</NewProtocol>\n'
    b'<NewInternalPort>51413</NewInternalPort>\n<NewInternalClient>192.168.1.20</NewInternalClient>\n'
    b'<NewEnabled>1</NewEnabled>\n<NewPortMappingDescription>Home Assistant</NewPortMappingDescription>\n'
    b'<NewLeaseDuration>3600</NewLeaseDuration></u:AddPortMapping></s:Body></s:Envelope>'
)
ASYNC_LIST = (
    b'POST /ctl/fibre/WANIPConn1 HTTP/1.1\r\nHost: 192.168.1.1:5000\r\n'
    b'SOAPAction: "urn:schemas-upnp-org:service:WANIPConnection:2#GetListOfPortMappings"\r\n'
    b'Content-Type: text/xml; charset="utf-8"\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate\r\n'
    b'User-Agent: Python/3.11 aiohttp/3.14.5\r\nContent-Length: 439\r\n\r\n'
    b'<?xml version="1.0"?><s:Envelope s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/" '
    b'xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><u:GetListOfPortMappings '
    b'xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2"><NewStartPort>1</NewStartPort>\n'
    b'<NewEndPort>65535</NewEndPort>\n<NewProtocol>TCP</NewProtocol>\n<NewManage>0</NewManage>\n'
    b'<NewNumberOfPorts>0</NewNumberOfPorts></u:GetListOfPortMappings></s:Body></s:Envelope>'
)


class AsyncUPnPClientTests(GatewayHarness):
    """
    Home Assistant's client (async-upnp-client on aiohttp).
    """

    def test_addAndList(self) -> None:
        """
        Its AddPortMapping maps the port and its GetListOfPortMappings lists
        it, in the :2 namespace.
        """
        answer = self.http(ASYNC_ADD)
        self.assertEqual(answer.status, 200, answer.raw)
        self.assertEqual(self.kernel(), [("TCP", 51413, "", A, 51413)])
        answer = self.http(ASYNC_LIST)
        self.assertEqual(answer.status, 200, answer.raw)
        self.assertEqual(
            answer.response().tag,
            "{urn:schemas-upnp-org:service:WANIPConnection:2}GetListOfPortMappingsResponse",
        )
        listing = etree.fromstring(answer.out()["NewPortListing"].encode())
        ns = {"p": "urn:schemas-upnp-org:gw:WANIPConnection"}
        self.assertEqual(listing.xpath("//p:NewExternalPort/text()", namespaces=ns), ["51413"])
        self.assertEqual(listing.xpath("//p:NewDescription/text()", namespaces=ns), ["Home Assistant"])
        self.assertEqual(listing.xpath("//p:NewLeaseTime/text()", namespaces=ns), ["3600"])
