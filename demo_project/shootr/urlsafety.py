"""Which URLs Shootr will open: http(s) only, and never a host on a private network.

A screenshot service fetches whatever URL a visitor types, from inside the network it runs in; left
unchecked, it would photograph the cloud metadata service or an intranet page for anyone who asks
(server-side request forgery). The form refuses what it can tell from the text alone; the task
checks again, resolving the host name, before the browser starts; and the browser's filtering
proxy (``proxy.py``) checks every request the page makes, redirects included, with
``check_endpoint``, and connects to the very addresses it checked.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import URLValidator

ALLOWED_SCHEMES = ("http", "https")
MAX_URL_LENGTH = 2000
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
LOCAL_NAMES = ("localhost", "localhost.localdomain")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("", "0", "false", "no", "off")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class URLRefused(ValueError):
    """The URL is not one Shootr opens; the message says why, for the visitor."""


@dataclass(frozen=True)
class PrivateAccess:
    """The private addresses Shootr may open anyway: all of them, or some address:port pairs
    (``port`` None: any port). The default, nothing, is the only safe one in production."""

    everything: bool = False
    endpoints: frozenset[tuple[Address, int | None]] = frozenset()

    def __str__(self) -> str:
        if self.everything:
            return "all private hosts"
        if not self.endpoints:
            return "no private hosts"
        return ", ".join(sorted(_endpoint_text(a, p) for a, p in self.endpoints))

    @property
    def anything(self) -> bool:
        return self.everything or bool(self.endpoints)

    def allows(self, address: Address, port: int) -> bool:
        return self.everything or any(
            address == allowed and allowed_port in (None, port)
            for allowed, allowed_port in self.endpoints
        )

    @classmethod
    def parse(cls, value: object) -> PrivateAccess:
        """``True``/``"1"``: everything; ``False``/``""``/``"0"``: nothing; otherwise addresses with
        an optional port, as a list or one comma-separated string: ``"127.0.0.1:8000, [::1]:8000"``.
        """
        if isinstance(value, PrivateAccess):
            return value
        if isinstance(value, bool) or value is None:
            return cls(everything=bool(value))
        items: Iterable[object]
        if isinstance(value, str):
            word = value.strip().lower()
            if word in TRUE_WORDS:
                return cls(everything=True)
            if word in FALSE_WORDS:
                return cls()
            items = value.split(",")
        elif isinstance(value, list | tuple | set | frozenset):
            items = value
        else:
            raise ImproperlyConfigured(
                f"SHOOTR_ALLOW_PRIVATE_HOSTS must be a bool or a list of addresses, not {value!r}"
            )
        return cls(endpoints=frozenset(_parse_endpoint(str(item)) for item in items
                                       if str(item).strip()))


def _parse_endpoint(text: str) -> tuple[Address, int | None]:
    text = text.strip()
    host, port = text, None
    if text.startswith("["):  # [::1] or [::1]:8000
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif text.count(":") == 1:  # 127.0.0.1:8000; a bare IPv6 address has several colons
        host, port = text.split(":")
    try:
        return ipaddress.ip_address(host), int(port) if port is not None else None
    except ValueError:
        raise ImproperlyConfigured(
            f"SHOOTR_ALLOW_PRIVATE_HOSTS: {text!r} is not an address with an optional port "
            "(127.0.0.1:8000, [::1]:8000, 10.0.0.5)"
        ) from None


def _endpoint_text(address: Address, port: int | None) -> str:
    host = f"[{address}]" if address.version == 6 else str(address)
    return host if port is None else f"{host}:{port}"


def private_access() -> PrivateAccess:
    """The ``SHOOTR_ALLOW_PRIVATE_HOSTS`` setting, or else the environment variable of that name.

    Deliberately independent of ``DEBUG``: a site left in debug mode must not also open the
    private network to whoever types a URL.
    """
    value = getattr(settings, "SHOOTR_ALLOW_PRIVATE_HOSTS", None)
    if value is None:
        value = os.environ.get("SHOOTR_ALLOW_PRIVATE_HOSTS", "")
    return PrivateAccess.parse(value)


def parse(url: str) -> SplitResult:
    """Refuse what is wrong on its face: other schemes, no host, not a URL at all."""
    if len(url) > MAX_URL_LENGTH:
        raise URLRefused(f"URLs longer than {MAX_URL_LENGTH} characters are not accepted.")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        shown = f"{parts.scheme}:" if parts.scheme else url
        raise URLRefused(f"{shown!r} is not allowed: only http:// and https:// URLs are.")
    try:
        URLValidator(schemes=list(ALLOWED_SCHEMES))(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except (ValidationError, ValueError):
        raise URLRefused(f"{url!r} is not a valid URL.") from None
    if not parts.hostname:
        raise URLRefused(f"{url!r} has no host name.")
    return parts


def address_kind(address: Address) -> str | None:
    """Name the kind of a non-public address, or None for an address on the public internet."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped or address.sixtofour
        if mapped is not None:
            return address_kind(mapped)
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    for kind in ("unspecified", "loopback", "link_local", "private", "multicast", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if address.is_global else "non-public"


def _refuse_address(host: str, address: Address, port: int | None, access: PrivateAccess) -> None:
    kind = address_kind(address)
    if kind is not None and not (port is not None and access.allows(address, port)):
        target = host if host == str(address) else f"{host} ({address})"
        article = "an" if kind[0] in "aeiou" else "a"
        raise URLRefused(f"{target} is {article} {kind} address; Shootr only opens public hosts.")


def _default_port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme.lower() == "https" else 80)


def check_text(url: str, *, allow_private: bool | PrivateAccess) -> str:
    """The form's check: no network access, so it stays fast; names are resolved by the task."""
    access = PrivateAccess.parse(allow_private)
    parts = parse(url)
    host = parts.hostname or ""
    if access.everything:
        return url
    if host in LOCAL_NAMES or host.endswith(".localhost"):
        if not access.anything:
            raise URLRefused(f"{host} is a loopback address; Shootr only opens public hosts.")
        return url  # the task resolves it, and checks the addresses against the exceptions
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return url  # a name, not an address: the task resolves it
    _refuse_address(host, address, _default_port(parts), access)
    return url


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def check_endpoint(host: str, port: int, *, allow_private: bool | PrivateAccess,
                   resolve: Resolver = system_resolver) -> list[str]:
    """Resolve ``host`` and return its addresses if every one of them may be opened.

    The browser's proxy connects to exactly these addresses, so a DNS server that answers
    differently the next time (DNS rebinding) changes nothing.
    """
    access = PrivateAccess.parse(allow_private)
    host = host.strip("[]")
    try:
        addresses = resolve(host, port)
    except OSError as exc:
        raise URLRefused(f"cannot resolve the host name {host!r} ({exc}).") from None
    if not addresses:
        raise URLRefused(f"the host name {host!r} has no addresses.")
    for text in addresses:
        _refuse_address(host, ipaddress.ip_address(text.split("%", 1)[0]), port, access)
    return addresses


def check_url(url: str, *, allow_private: bool | PrivateAccess,
              resolve: Resolver = system_resolver) -> str:
    """The task's check before it starts the browser: every address the host resolves to must
    be public (or one of the allowed exceptions)."""
    access = PrivateAccess.parse(allow_private)
    parts = parse(url)
    if access.everything:
        return url
    check_endpoint(parts.hostname or "", _default_port(parts), allow_private=access,
                   resolve=resolve)
    return url
