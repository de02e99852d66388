"""What every request to `serve` passes before a route sees it: Host, Origin, Content-Type and
token checks, body limits and deadlines, security headers, one log line per failed request.

An ASGI middleware (`Guard`) plus a uvicorn protocol (`slow_client_protocol`) that closes a
connection whose request headers do not arrive in time and answers a request h11 cannot parse
in JSON too; uvicorn itself caps the connections (`limit_concurrency`: its 503 past the cap is
plain text without our headers). Every refusal is a 4xx with a one-line JSON `{"error": ...}`.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from dirtymnist.errors import ConfigError, DataError

log = logging.getLogger("dirtymnist.look.serve")

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
DRAIN_BYTES = 16 << 20  # a declared body up to this size is read and dropped, so the client gets the 413
TOKEN_COOKIE = "dirtymnist_token"  # + "_PORT": one cookie per server, so two on one host keep theirs
FORM_TYPE = "multipart/form-data"
PORT_RE = re.compile(r"[0-9]{1,5}")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
                                 b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class Refusal(Exception):
    """A request refused with `status` and a one-line message (raised anywhere below `Guard`)."""

    def __init__(self, status: int, message: str, close: bool = False):
        super().__init__(message)
        self.status, self.message, self.close = status, message, close


@dataclass
class GuardRules:
    """What `Guard` enforces. `limits`: route path -> body bytes allowed (others: none);
    `post_types`: route path -> accepted media types of a POST."""

    hosts: frozenset[str] = LOOPBACK_NAMES  # Host header names (no port); "*" = any
    token: str | None = None
    timeout: float = 10.0  # seconds for a request's headers, and again for its body
    limits: dict[str, int] = field(default_factory=dict)
    form_slack: int = 0  # bytes allowed on top of a route's limit for a multipart/form-data body
    post_types: dict[str, tuple[str, ...]] = field(default_factory=dict)
    public: Callable[[str], str] = str  # hides absolute paths in a message


def host_name(value: str) -> str:
    """`Host` / netloc value -> lower-case name without port or IPv6 brackets; "" when it is
    not NAME, NAME:DIGITS, [IPV6] or [IPV6]:DIGITS (e.g. `localhost:80@evil.com`)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        if not _ipv6(name) or (rest and not (rest.startswith(":") and PORT_RE.fullmatch(rest[1:]))):
            return ""
        return name
    if value.count(":") == 1:
        value, port = value.split(":")
        if not PORT_RE.fullmatch(port):
            return ""
    elif ":" in value:  # a bare IPv6 literal (a --host argument, not a Host header)
        return value if _ipv6(value) else ""
    return value if value and all(c.isalnum() or c in "-._" for c in value) else ""


def _ipv6(name: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(name), ipaddress.IPv6Address)
    except ValueError:
        return False


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback IP address (127.0.0.0/8, ::1); a name like 127.evil.com is not."""
    name = host_name(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Guard:
    """ASGI middleware: checks, limits and headers around the app (inside Starlette's
    ServerErrorMiddleware, so an error handled here is answered and logged once)."""

    def __init__(self, app, rules: GuardRules):
        self.app, self.rules = app, rules

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        reply = _Reply(send, self.rules, _token_cookie(scope, headers, self.rules))
        try:
            self._check(scope, headers)
            declared = _declared_length(headers)
            limit = self.rules.limits.get(scope["path"], 0)
            if limit and _media(headers) == FORM_TYPE:
                limit += self.rules.form_slack
            if declared is not None and declared > limit:
                await _refuse_large(scope, headers, receive, declared, limit, self.rules.timeout)
            await self.app(scope, _Body(receive, limit, self.rules.timeout, scope), reply.send)
        except Refusal as exc:
            await reply.error(exc.status, exc.message, exc.close)
        except (DataError, ConfigError) as exc:
            await reply.error(400, str(exc))
        except Exception as exc:  # noqa: BLE001 - one line to the client, one to the log
            if _disconnected(exc):
                reply.status, reply.message = 499, "client went away before its request was read"
            else:
                log.debug("serve: %s %s failed", scope["method"], scope["path"], exc_info=True)
                text = str(exc).splitlines()[0] if str(exc) else ""
                await reply.error(500, f"internal error ({type(exc).__name__}{': ' if text else ''}{text})")
        if reply.status is not None and reply.status >= 400:
            client = _peer(scope.get("client"))
            log.warning("serve: %s %s %s -> %d %s (%.0f ms)", client, _printable(scope["method"], 20),
                        _printable(scope["path"]), reply.status, _printable(reply.message),
                        1000 * (time.perf_counter() - t0))

    def _check(self, scope, headers: dict[str, str]) -> None:
        """Host (DNS rebinding), token, then for a POST its Origin and Content-Type."""
        rules = self.rules
        host = headers.get("host", "")
        name = host_name(host)
        if (host and not name) or ("*" not in rules.hosts and name not in rules.hosts):
            raise Refusal(403, f"Host {host[:100]!r} not allowed (start serve with --allowed-host "
                               f"NAME to accept it)")
        if rules.token is not None and not _has_token(scope, headers, rules.token):
            raise Refusal(403, "this server needs its token: open the URL it printed "
                               "(?token=...) or send 'Authorization: Bearer TOKEN'")
        navigation = (scope["method"] in ("GET", "HEAD") and scope["path"] == "/"
                      and headers.get("sec-fetch-mode") == "navigate")
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none") and not navigation:
            # another site's <img>, fetch or form: only a link to the page itself may come from one
            raise Refusal(403, "cross-site request refused")
        if scope["method"] in ("GET", "HEAD"):
            return
        origin = headers.get("origin")
        if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower() != host.lower()):
            raise Refusal(403, f"cross-origin request from {origin[:100]!r} refused")
        accepted = rules.post_types.get(scope["path"])
        media = _media(headers)
        if accepted is not None and media not in accepted:
            hint = (" (curl -F file=@image.png, or curl --data-binary @image.png -H 'Content-Type: image/png')"
                    if FORM_TYPE in accepted else "")
            raise Refusal(415, f"Content-Type {media or '(none)'!r} not accepted here; send one of "
                               f"{', '.join(accepted)}{hint}")


class _Reply:
    """The `send` given to the app: adds the security headers, notes the status and message."""

    def __init__(self, send, rules: GuardRules, set_cookie: bytes | None):
        self._send, self.rules, self.set_cookie = send, rules, set_cookie
        self.status: int | None = None
        self.message = ""

    async def send(self, message):
        if message["type"] == "http.response.start":
            self.status = message["status"]
            extra = list(SECURITY_HEADERS) + [(b"cache-control", b"no-store")]
            if self.set_cookie:
                extra.append((b"set-cookie", self.set_cookie))
            message = {**message, "headers": list(message.get("headers", [])) + extra}
        elif message["type"] == "http.response.body" and self.status and self.status >= 400 and not self.message:
            self.message = _error_text(message.get("body", b""))
        await self._send(message)

    async def error(self, status: int, text: str, close: bool = False) -> None:
        text = self.rules.public(" ".join(text.split()))[:500]
        if self.status is not None:  # the response has started: nothing more can be said
            self.message = self.message or text
            return
        body = json.dumps({"error": text}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if close:
            headers.append((b"connection", b"close"))
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        self.message = text
        await self.send({"type": "http.response.body", "body": body})


class _Body:
    """The `receive` given to the app: at most `limit` body bytes, all of them within `timeout`."""

    def __init__(self, receive, limit: int, timeout: float, scope):
        self._receive, self.limit, self.scope = receive, limit, scope
        self.deadline = time.monotonic() + timeout
        self.size = 0
        self.done = False

    async def __call__(self):
        if self.done:  # body read: later calls only wait for a disconnect, without deadline
            return await self._receive()
        try:
            message = await asyncio.wait_for(self._receive(), max(self.deadline - time.monotonic(), 0.001))
        except asyncio.TimeoutError:
            raise Refusal(408, f"request body not received in time ({self.size} bytes so far)",
                          close=True) from None
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            self.done = not message.get("more_body", False)
            if self.size > self.limit:
                raise Refusal(413, _too_large(self.scope, self.size, self.limit, "at least "), close=True)
        else:
            self.done = True
        return message


async def _refuse_large(scope, headers, receive, declared: int, limit: int, timeout: float) -> None:
    """A declared body over the route's limit: 413 at once, unread (Expect: 100-continue, or
    more than DRAIN_BYTES: the connection closes), else read and dropped first so that a simple
    client sending it all still reads the answer."""
    message = _too_large(scope, declared, limit)
    if headers.get("expect", "").lower() == "100-continue" or declared > DRAIN_BYTES:
        raise Refusal(413, message, close=True)
    body = _Body(receive, DRAIN_BYTES, timeout, scope)
    while not body.done:
        if (await body())["type"] != "http.request":
            break
    raise Refusal(413, message)


def _too_large(scope, size: int, limit: int, qualifier: str = "") -> str:
    name = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("name", [""])[0]
    what = name.replace("/", "_")[:100] if name else scope["path"]
    return too_large(what, size, limit, qualifier)


def too_large(what: str, size: int, limit: int, qualifier: str = "") -> str:
    """The 413 message: exact byte counts (a size just over the limit reads as such)."""
    return f"{what}: {qualifier}{size} bytes upload, more than {_size(limit)}"


def _size(n: int) -> str:
    mb = f" ({n / (1 << 20):g} MB)" if n >= 1 << 20 else ""
    return f"{n} bytes{mb}"


def _media(headers: dict[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _printable(text: str, limit: int = 200) -> str:
    """`text` for one log line: control characters (a %0A in a path) escaped, at most `limit` long."""
    return text.encode("unicode_escape").decode("ascii")[:limit]


def _declared_length(headers: dict[str, str]) -> int | None:
    raw = headers.get("content-length")
    if raw is None:
        return None
    if not raw.strip().isascii() or not raw.strip().isdigit() or len(raw.strip()) > 18:
        raise Refusal(400, "Content-Length is not a number", close=True)
    return int(raw)


def _has_token(scope, headers: dict[str, str], token: str) -> bool:
    given = []
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        given.append(auth[7:].strip())
    given += parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
    cookie = cookie_name(scope) + "="
    given += [c.strip()[len(cookie):] for c in headers.get("cookie", "").split(";") if c.strip().startswith(cookie)]
    return any(_same(g, token) for g in given)


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape"))


def cookie_name(scope) -> str:
    """The token cookie of the server that got `scope`: one per port (cookies ignore ports)."""
    server = scope.get("server")
    return f"{TOKEN_COOKIE}_{server[1]}" if server and server[1] is not None else TOKEN_COOKIE


def _token_cookie(scope, headers: dict[str, str], rules: GuardRules) -> bytes | None:
    """The page opened with ?token=...: a cookie keeps it for the page's own requests."""
    if rules.token is None or scope["path"] != "/":
        return None
    given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])
    if any(_same(g, rules.token) for g in given):
        return f"{cookie_name(scope)}={rules.token}; HttpOnly; SameSite=Strict; Path=/".encode()
    return None


def _error_text(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", ""))[:300]
    except (ValueError, AttributeError):
        return body[:100].decode("latin-1", "replace")


def _disconnected(exc: Exception) -> bool:
    from starlette.requests import ClientDisconnect

    return isinstance(exc, ClientDisconnect | ConnectionResetError | BrokenPipeError)


def _peer(client) -> str:
    return f"{client[0]}:{client[1]}" if client else "-"


def slow_client_protocol(timeout: float):
    """uvicorn's h11 protocol, closing a connection whose next request's headers are not all
    there `timeout` seconds after it opened or after its last answer (slowloris)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class SlowClientGuard(H11Protocol):
        _deadline = None

        def connection_made(self, transport):
            super().connection_made(transport)
            self._arm()

        def on_response_complete(self):
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc):
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _arm(self):
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(timeout, self._too_slow)

        def send_400_response(self, msg: str) -> None:
            """uvicorn's answer to a request h11 cannot parse (bad or oversized headers): as
            every other refusal, one line of JSON with the security headers."""
            import h11

            body = json.dumps({"error": f"bad request: {msg}"}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       (b"connection", b"close"), *SECURITY_HEADERS, (b"cache-control", b"no-store")]
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                          h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
            self.transport.close()

        def _too_slow(self):
            waiting_for_headers = self.cycle is None or self.cycle.response_complete
            if waiting_for_headers and not self.transport.is_closing():
                if self.conn.trailing_data[0]:  # part of a request came: a slow client, not an idle one
                    log.warning("serve: %s closed: request headers not received in %g s",
                                _peer(self.client), timeout)
                self.transport.close()

    return SlowClientGuard
