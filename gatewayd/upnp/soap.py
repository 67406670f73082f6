# -*- test-case-name: tests.unit.test_soap -*-
"""
SOAP control (UDA-essentials.md section 4): hardened envelope parsing,
action and argument checking against the SCPD, dispatch to a service's
implementation, and faults.

Decisions:
  - A missing or malformed C{SOAPACTION} header (empty, a lone or unbalanced
    quote, no C{#}) is answered with HTTP 400 and no body, as miniupnpd does
    for a missing one: without it there is no action to fault.
  - The action is checked before the body: an unknown action, a service
    type that is not ours (or a higher version than implemented), an action
    missing from the SCPD of the requested version, or a body whose action
    element disagrees with C{SOAPACTION} is 401 Invalid Action.
  - Anything wrong with the body itself (not XML, a DTD of any kind, no
    Envelope/Body/action element, missing, duplicate, unknown or mistyped
    arguments) is 402 Invalid Args; entities are never expanded and nothing
    is fetched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from inspect import iscoroutine
from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple

from lxml import etree
from lxml.builder import ElementMaker
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from gatewayd.errors import (
    ActionFailed,
    InvalidAction,
    InvalidArgs,
    InvalidVar,
    UPnPError,
)
from gatewayd.upnp.description import implementedType
from gatewayd.upnp.model import (
    UPNP_ORG,
    Action,
    Service,
    ServiceType,
    XMLDocument,
    formatValue,
    parseValue,
)

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_ENCODING = "http://schemas.xmlsoap.org/soap/encoding/"
CONTROL_NS = "urn:schemas-upnp-org:control-1-0"
CONTENT_TYPE = b'text/xml; charset="utf-8"'

#: The largest request body read; more is refused (the HTTP layer enforces
#: its own limit before the body is even received).
MAX_BODY = 65536

PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
    collect_ids=False,
)

S = ElementMaker(namespace=SOAP_ENV, nsmap={"s": SOAP_ENV})
PLAIN = ElementMaker()
_UPNP_ERROR = ElementMaker(namespace=CONTROL_NS, nsmap={None: CONTROL_NS})

_SERVICE_URN = re.compile(
    rf"urn:{re.escape(UPNP_ORG)}:service:"
    r"(?P<name>[A-Za-z0-9_-]{1,64}):(?P<version>[1-9][0-9]{0,3})"
)
_SOAPACTION = re.compile(
    r"(?P<urn>urn:[A-Za-z0-9._:-]{1,200})#(?P<action>[A-Za-z_][A-Za-z0-9_]{0,63})"
)
_QUERY_STATE_VARIABLE = (CONTROL_NS, "QueryStateVariable")


class MalformedSOAPAction(ValueError):
    """
    The C{SOAPACTION} header is missing or not C{"<serviceType>#<action>"}.
    """


@dataclass(frozen=True)
class SOAPActionForm:
    """
    A form of C{SOAPACTION} that real clients send.

    @ivar name: what it is and who sends it.
    @ivar example: a header value in that form (the tests parse each one).
    @ivar pattern: matches the whole header value in this form; its group
        C{value} is C{<serviceType>#<action>}.
    """

    name: str
    example: bytes
    pattern: re.Pattern[str]


#: Every accepted form of C{SOAPACTION}, tried in order.  No form admits a
#: quote inside the value, so a lone or unbalanced quote (CVE-2026-5720 in
#: miniupnpd), an empty value or stray whitespace inside it is refused.
SOAPACTION_FORMS: tuple[SOAPActionForm, ...] = (
    SOAPActionForm(
        "double-quoted (UDA; miniupnpc, async-upnp-client, GUPnP, Windows)",
        b'"urn:schemas-upnp-org:service:WANIPConnection:1#GetExternalIPAddress"',
        re.compile(r'"(?P<value>[^"\s]+)"'),
    ),
    SOAPActionForm(
        "unquoted (UDA 1.0 control points, curl scripts)",
        b"urn:schemas-upnp-org:service:WANIPConnection:1#GetExternalIPAddress",
        re.compile(r'(?P<value>[^"\s]+)'),
    ),
    SOAPActionForm(
        "padded with blanks outside or inside the quotes (hand-written clients)",
        b' "  urn:schemas-upnp-org:service:WANIPConnection:1#GetExternalIPAddress "\t',
        re.compile(r'[ \t]*(?:"[ \t]*(?P<value>[^"\s]+)[ \t]*"|(?P<bare>[^"\s]+))[ \t]*'),
    ),
)


def parseSOAPAction(header: bytes | None) -> tuple[str, str]:
    """
    Parse a C{SOAPACTION} header value.

    @return: C{(serviceURN, actionName)}, e.g.
        C{("urn:schemas-upnp-org:service:WANIPConnection:1",
        "GetExternalIPAddress")}.
    @raise MalformedSOAPAction: missing, empty, a lone or unbalanced quote,
        or not C{<urn>#<action>}.
    """
    if header is None:
        raise MalformedSOAPAction("no SOAPACTION header")
    if len(header) > 300:
        raise MalformedSOAPAction("SOAPACTION too long")
    try:
        text = header.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedSOAPAction("SOAPACTION is not ASCII") from None
    for form in SOAPACTION_FORMS:
        found = form.pattern.fullmatch(text)
        if found is not None:
            value = found["value"] or found.groupdict().get("bare") or ""
            break
    else:
        raise MalformedSOAPAction(f"SOAPACTION {text!r} is empty or has a stray quote")
    match = _SOAPACTION.fullmatch(value)
    if match is None:
        raise MalformedSOAPAction(f"SOAPACTION {value!r} is not <serviceType>#<action>")
    return match["urn"], match["action"]


class Requester(NamedTuple):
    """
    Who called an action.

    @ivar address: the TCP peer's IP address (never anything the client
        wrote in the request).
    @ivar userAgent: the C{User-Agent} header, for logs only.
    """

    address: str
    userAgent: str


class _HTTPStatus(Exception):
    """
    Answer with a bare HTTP status instead of a SOAP response.
    """

    def __init__(self, code: int, why: str) -> None:
        super().__init__(code, why)
        self.code = code
        self.why = why


def _envelope(*content: etree._Element) -> bytes:
    envelope = S.Envelope(S.Body(*content))
    envelope.set(f"{{{SOAP_ENV}}}encodingStyle", SOAP_ENCODING)
    return etree.tostring(envelope, xml_declaration=True, encoding="utf-8")


#: The bytes before and after an action response element: what lxml
#: writes for L{_envelope}, kept byte for byte.
_RESPONSE_HEAD = (
    "<?xml version='1.0' encoding='utf-8'?>\n"
    f'<s:Envelope xmlns:s="{SOAP_ENV}" s:encodingStyle="{SOAP_ENCODING}"><s:Body>'
)
_RESPONSE_TAIL = "</s:Body></s:Envelope>"

#: Characters XML 1.0 cannot carry at all (lxml refuses them too).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _escapeText(value: str) -> str:
    """
    @return: C{value} as XML character data, escaped as lxml escapes it.
    @raise ValueError: C{value} holds a character XML cannot carry.
    """
    if _NOT_XML.search(value) is not None:
        raise ValueError(f"{value!r} holds a character XML cannot carry")
    if "&" in value:
        value = value.replace("&", "&amp;")
    if "<" in value:
        value = value.replace("<", "&lt;")
    if ">" in value:
        value = value.replace(">", "&gt;")
    if "\r" in value:
        value = value.replace("\r", "&#13;")
    return value


def actionResponse(serviceURN: str, action: str, out: Mapping[str, str]) -> bytes:
    """
    @return: the SOAP response body for C{action}, its element in
        C{serviceURN}, out arguments unqualified in the given order (the
        same bytes lxml writes for it; this is every successful answer, so
        it is built from strings instead of a tree).
    """
    parts = [_RESPONSE_HEAD, f'<u:{action}Response xmlns:u="{_escapeText(serviceURN)}"']
    if out:
        parts.append(">")
        for name, value in out.items():
            parts.append(f"<{name}>{_argumentText(value)}</{name}>")
        parts.append(f"</u:{action}Response>")
    else:
        parts.append("/>")
    parts.append(_RESPONSE_TAIL)
    return "".join(parts).encode("utf-8")


def _argumentText(value: str) -> str:
    if isinstance(value, XMLDocument) and "]]>" not in value:
        if _NOT_XML.search(value) is not None:
            raise ValueError("the document holds a character XML cannot carry")
        return f"<![CDATA[{value}]]>"
    return _escapeText(value)


def faultBody(error: UPnPError) -> bytes:
    """
    @return: the SOAP fault for C{error}, exactly as UDA-essentials.md
        section 4.4 shows it.
    """
    return _envelope(
        S.Fault(
            PLAIN.faultcode("s:Client"),
            PLAIN.faultstring("UPnPError"),
            PLAIN.detail(
                _UPNP_ERROR.UPnPError(
                    _UPNP_ERROR.errorCode(str(error.code)),
                    _UPNP_ERROR.errorDescription(error.description),
                )
            ),
        )
    )


_ENVELOPE = f"{{{SOAP_ENV}}}Envelope"
_BODY = f"{{{SOAP_ENV}}}Body"


def parseEnvelope(body: bytes) -> etree._Element:
    """
    Parse a SOAP request body with L{PARSER}.

    @return: the action element (the only element in C{s:Body}).
    @raise InvalidArgs: not XML, carries a DTD, or not an Envelope with a Body
        holding exactly one element.
    """
    try:
        root = etree.fromstring(body, PARSER)
    except etree.XMLSyntaxError as e:
        raise InvalidArgs(f"malformed XML: {e}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise InvalidArgs("a document type declaration is not allowed")
    if root.tag != _ENVELOPE:
        raise InvalidArgs("the root element is not a SOAP Envelope")
    bodies = [e for e in root if e.tag == _BODY]
    if len(bodies) != 1:
        raise InvalidArgs("the Envelope needs exactly one Body")
    elements = [e for e in bodies[0] if isinstance(e.tag, str)]
    if len(elements) != 1:
        raise InvalidArgs("the Body needs exactly one action element")
    return elements[0]


#: Bodies up to this size have their reading remembered (L{_readBody}).
_REMEMBERED_BODY = 4096


def _parseBody(body: bytes) -> tuple[str, Mapping[str, str]]:
    """
    @return: the tag of the action element in C{body} and its arguments.
    @raise InvalidArgs: see L{parseEnvelope} and L{_arguments}.
    """
    element = parseEnvelope(body)
    return element.tag, MappingProxyType(_arguments(element))


#: L{_parseBody}, remembered for the last 512 bodies (pure; control points
#: send the same bodies again and again; at most 2 MiB).  Refusals are not
#: remembered: they raise.
_readBody = lru_cache(maxsize=512)(_parseBody)


def _arguments(element: etree._Element) -> dict[str, str]:
    """
    @return: the argument elements of an action element by name.  Arguments
        are unqualified per UDA; qualified with the action's namespace (the
        QueryStateVariable example and some old stacks) is accepted too.
    @raise InvalidArgs: an argument is in a foreign namespace, has child
        elements, or appears twice.
    """
    arguments: dict[str, str] = {}
    if not len(element):
        return arguments
    actionNamespace = etree.QName(element).namespace
    for child in element:
        if not isinstance(child.tag, str):
            raise InvalidArgs("unexpected content in the action element")
        name = etree.QName(child)
        if name.namespace not in (None, actionNamespace):
            raise InvalidArgs(f"argument {name.localname} in a foreign namespace")
        if len(child):
            raise InvalidArgs(f"argument {name.localname} has child elements")
        if name.localname in arguments:
            raise InvalidArgs(f"argument {name.localname} given twice")
        arguments[name.localname] = child.text or ""
    return arguments


def checkArguments(
    serviceType: ServiceType, action: Action, given: Mapping[str, str]
) -> dict[str, Any]:
    """
    Match the arguments by name (in any order), convert and range-check them.

    @return: the in arguments' Python values by name, in SCPD order.
    @raise InvalidArgs: missing, unknown or mistyped.
    @raise gatewayd.errors.StringArgumentTooLong: a string beyond the limit.
    @raise gatewayd.errors.ArgumentValueOutOfRange: outside the allowed range
        or list.
    """
    expected = [a.name for a in action.inArguments]
    unknown = set(given) - set(expected)
    if unknown:
        raise InvalidArgs(f"unexpected argument(s) {', '.join(sorted(unknown))}")
    missing = [name for name in expected if name not in given]
    if missing:
        raise InvalidArgs(f"missing argument(s) {', '.join(missing)}")
    values: dict[str, Any] = {}
    for argument in action.inArguments:
        variable = serviceType.variable(argument.relatedStateVariable)
        value = parseValue(variable.dataType, given[argument.name])
        if argument.name not in action.checkedByService:
            variable.check(value)
        values[argument.name] = value
    return values


def _serviceVersion(service: Service, serviceURN: str) -> int:
    match = _SERVICE_URN.fullmatch(serviceURN)
    if match is None or match["name"] != service.type.name:
        raise InvalidAction(f"{serviceURN} is not served here")
    version = int(match["version"])
    if version > service.type.version:
        raise InvalidAction(f"{serviceURN} is newer than implemented")
    return version


#: How many C{SOAPACTION} headers a control resource remembers.
_RESOLVED_LIMIT = 256


class _Resolved(NamedTuple):
    """
    The action a C{SOAPACTION} header names: C{action} is L{None} for
    QueryStateVariable.
    """

    serviceURN: str
    actionName: str
    serviceType: ServiceType
    action: Action | None
    #: The tag the body's action element must have.
    tag: str


class ControlResource(Resource):
    """
    The control URL of one service: answers SOAP POSTs by calling the
    service implementation's method named like the action, as
    C{method(requester, **inArguments)}; it returns a mapping of out
    argument names to values, directly, through a L{Deferred} or as a
    coroutine.  C{QueryStateVariable} calls C{queryStateVariable(name)} if
    the implementation has it.
    """

    isLeaf = True
    allowedMethods = (b"POST",)
    log = Logger()

    def __init__(
        self, service: Service, authorize: Callable[[str, str, str], None] | None = None
    ) -> None:
        """
        @param authorize: called as C{authorize(serviceTypeName, action,
            requesterAddress)} once the arguments are checked, before the
            action runs; it raises (e.g. 606) to refuse.
        """
        super().__init__()
        self._service = service
        self._authorize = authorize
        self._views: dict[int, ServiceType] = {}
        self._resolved: dict[bytes | None, _Resolved] = {}

    def _serviceType(self, version: int) -> ServiceType:
        """
        @return: the service as a control point of C{version} sees it (the
            implemented actions only), computed once per version.
        """
        view = self._views.get(version)
        if view is None:
            view = self._views[version] = implementedType(self._service).at(version)
        return view

    def render_GET(self, request: IRequest) -> bytes:
        """
        405: a control URL only takes POST.
        """
        request.setResponseCode(405)
        request.setHeader(b"allow", b"POST")
        request.setHeader(b"content-length", b"0")
        return b""

    render_HEAD = render_GET

    def render_POST(self, request: IRequest) -> object:
        requester = Requester(
            address=_peer(request),
            userAgent=(request.getHeader(b"user-agent") or b"").decode("latin-1"),
        )
        body = request.content.read(MAX_BODY + 1)
        outcome = self.answer(request.getHeader(b"soapaction"), body, requester)
        if isinstance(outcome, Answer):
            _writeAnswer(outcome, request)
            return NOT_DONE_YET
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)
        outcome.addCallback(self._write, request, gone)
        outcome.addErrback(lambda f: self.log.failure("Writing a SOAP response failed", f))
        return NOT_DONE_YET

    def answer(
        self, soapAction: bytes | None, body: bytes, requester: Requester
    ) -> Answer | Deferred[Answer]:
        """
        Answer one SOAP request: check the action and its arguments, ask
        the authorizer, call the implementation and render its result or
        the fault.  This is the whole of SOAP control, for twisted.web's
        requests (L{render_POST}) and for the HTTP layer's direct path
        alike.

        @param soapAction: the C{SOAPACTION} header, if any.
        @param body: the request body.
        @param requester: who asks.
        @return: the answer, or a L{Deferred} of it when the implementation
            answers later (it never fails).
        """
        try:
            render, result = self._call(soapAction, body, requester)
            if not isinstance(result, Deferred):
                return Answer(200, render(result))
        except Exception:
            return self._fault(Failure(), requester.address)
        later = result.addCallback(lambda value: Answer(200, render(value)))
        return later.addErrback(self._fault, requester.address)

    def _call(
        self, soapAction: bytes | None, body: bytes, requester: Requester
    ) -> tuple[Callable[[Any], bytes], Any]:
        """
        Check and run the action.

        @return: a function rendering the action's result as the response
            body, and that result (maybe a L{Deferred}).
        """
        if len(body) > MAX_BODY:
            raise _HTTPStatus(413, "body too large")
        resolved = self._resolved.get(soapAction)
        if resolved is None:
            resolved = self._resolve(soapAction)
        serviceURN, actionName, serviceType, action, tag = resolved
        if action is None:
            return self._queryStateVariable(body, tag)
        inArguments = checkArguments(serviceType, action, self._actionArguments(body, tag, actionName))
        if self._authorize is not None:
            self._authorize(self._service.type.name, actionName, requester.address)
        method = getattr(self._service.implementation, actionName)
        result = method(requester, **inArguments)
        if iscoroutine(result):
            result = Deferred.fromCoroutine(result)

        def render(result: Mapping[str, Any] | None) -> bytes:
            result = {} if result is None else result
            out: dict[str, str] = {}
            for argument in action.outArguments:
                if argument.name not in result:
                    raise _ProgrammingError(f"{actionName} returned no {argument.name}")
                variable = serviceType.variable(argument.relatedStateVariable)
                out[argument.name] = formatValue(variable.dataType, result[argument.name])
            return actionResponse(serviceURN, actionName, out)

        return render, result

    def _resolve(self, soapAction: bytes | None) -> _Resolved:
        """
        Find the action a C{SOAPACTION} header names; remember the answer
        (a control point sends the same few headers over and over).

        @raise _HTTPStatus: 400 for a malformed header.
        @raise InvalidAction: not an action of this service.
        """
        try:
            serviceURN, actionName = parseSOAPAction(soapAction)
        except MalformedSOAPAction as e:
            raise _HTTPStatus(400, str(e)) from None
        if (serviceURN, actionName) == _QUERY_STATE_VARIABLE:
            resolved = _Resolved(
                serviceURN, actionName, self._service.type, None, f"{{{CONTROL_NS}}}{actionName}"
            )
        else:
            serviceType = self._serviceType(_serviceVersion(self._service, serviceURN))
            action = serviceType.action(actionName)
            if action is None:
                raise InvalidAction(f"{actionName} is not an action of {serviceURN}")
            resolved = _Resolved(
                serviceURN, actionName, serviceType, action, f"{{{serviceURN}}}{actionName}"
            )
        if len(self._resolved) >= _RESOLVED_LIMIT:
            self._resolved.clear()
        self._resolved[soapAction] = resolved
        return resolved

    def _actionArguments(self, body: bytes, tag: str, actionName: str) -> Mapping[str, str]:
        """
        @return: the arguments in C{body}, whose action element must be
            C{tag}.
        """
        try:
            found, arguments = (
                _readBody(body) if len(body) <= _REMEMBERED_BODY else _parseBody(body)
            )
        except InvalidArgs as e:
            self.log.warn(
                "Refused a SOAP body for {action}: {why}", action=actionName, why=e.detail
            )
            raise
        if found != tag:
            raise InvalidAction(f"the body's {found} is not the {tag} SOAPACTION names")
        return arguments

    def _queryStateVariable(self, body: bytes, tag: str) -> tuple[Callable[[Any], bytes], Any]:
        query = getattr(self._service.implementation, "queryStateVariable", None)
        if not callable(query):
            raise InvalidAction("QueryStateVariable is not supported here")
        arguments = self._actionArguments(body, tag, "QueryStateVariable")
        if set(arguments) != {"varName"}:
            raise InvalidArgs("QueryStateVariable takes exactly varName")
        try:
            variable = self._service.type.variable(arguments["varName"].strip())
        except KeyError:
            raise InvalidVar(f"no state variable {arguments['varName']!r}") from None
        value = query(variable.name)
        if iscoroutine(value):
            value = Deferred.fromCoroutine(value)

        def render(value: object) -> bytes:
            return actionResponse(
                CONTROL_NS, "QueryStateVariable", {"return": formatValue(variable.dataType, value)}
            )

        return render, value

    def _fault(self, failure: Failure, address: str) -> Answer:
        if failure.check(_HTTPStatus):
            self.log.info(
                "SOAP request from {address} refused with {code}: {why}",
                address=address,
                code=failure.value.code,
                why=failure.value.why,
            )
            return Answer(failure.value.code, b"")
        if failure.check(UPnPError):
            error = failure.value
            self.log.info(
                "SOAP fault {code} for {address}: {why}",
                code=error.code,
                address=address,
                why=error.detail or error.description,
            )
        else:
            self.log.failure(
                "Action on {control} failed", failure, control=self._service.controlPath
            )
            error = ActionFailed()
        return Answer(500, faultBody(error))

    def _write(self, answer: Answer, request: IRequest, gone: list[Failure]) -> None:
        if gone:
            self.log.info("Client {address} left before the answer", address=_peer(request))
            return
        _writeAnswer(answer, request)


class Answer(NamedTuple):
    """
    The answer to a SOAP request.

    @ivar code: the HTTP status: 200, 500 with a fault, or a bare status
        (400, 413) with an empty body.
    @ivar body: the response body.
    """

    code: int
    body: bytes


def _writeAnswer(answer: Answer, request: IRequest) -> None:
    request.setResponseCode(answer.code)
    writeXML(answer.body, request)


class _ProgrammingError(Exception):
    """
    An implementation broke its contract (e.g. a missing out value).
    """


def _peer(request: IRequest) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", address))


def writeXML(body: bytes, request: IRequest) -> None:
    """
    Finish C{request} with C{body}: C{Content-Type} (text/xml for a body,
    none for an empty one), C{Content-Length}, C{EXT}.
    """
    if body:
        request.setHeader(b"content-type", CONTENT_TYPE)
    request.setHeader(b"content-length", b"%d" % (len(body),))
    request.setHeader(b"ext", b"")
    request.write(body)
    request.finish()
