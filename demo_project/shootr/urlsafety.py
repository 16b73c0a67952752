"""Which URLs Shootr will open: http(s) only, and never a host on a private network.

A screenshot service fetches whatever URL a visitor types, from inside the network it runs in; left
unchecked, it would photograph the cloud metadata service or an intranet page for anyone who asks
(server-side request forgery). The form refuses what it can tell from the text alone; the task
checks again, resolving the host name, right before the browser opens the page.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from urllib.parse import SplitResult, urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator

ALLOWED_SCHEMES = ("http", "https")
MAX_URL_LENGTH = 2000
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
LOCAL_NAMES = ("localhost", "localhost.localdomain")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class URLRefused(ValueError):
    """The URL is not one Shootr opens; the message says why, for the visitor."""


def private_hosts_allowed() -> bool:
    """Local development and the tests photograph pages on 127.0.0.1; production must not."""
    env = os.environ.get("SHOOTR_ALLOW_PRIVATE_HOSTS", "").strip().lower()
    return (
        env in ("1", "true", "yes", "on")
        or bool(getattr(settings, "SHOOTR_ALLOW_PRIVATE_HOSTS", False))
        or settings.DEBUG
    )


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


def _refuse_address(host: str, address: Address) -> None:
    kind = address_kind(address)
    if kind is not None:
        target = host if host == str(address) else f"{host} ({address})"
        raise URLRefused(f"{target} is a {kind} address; Shootr only opens public hosts.")


def check_text(url: str, *, allow_private: bool) -> str:
    """The form's check: no network access, so it stays fast; names are resolved by the task."""
    host = parse(url).hostname or ""
    if not allow_private:
        if host in LOCAL_NAMES or host.endswith(".localhost"):
            raise URLRefused(f"{host} is a loopback address; Shootr only opens public hosts.")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return url  # a name, not an address: the task resolves it
        _refuse_address(host, address)
    return url


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def check_url(url: str, *, allow_private: bool, resolve: Resolver = system_resolver) -> str:
    """The task's check: every address the host resolves to must be public.

    Chromium resolves the name again when it loads the page, so a DNS server that answers
    differently the second time (DNS rebinding) is not stopped here; see the deploy README for
    the egress firewall that closes that gap in production.
    """
    parts = parse(url)
    if allow_private:
        return url
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        addresses = resolve(host, port)
    except OSError as exc:
        raise URLRefused(f"cannot resolve the host name {host!r} ({exc}).") from None
    if not addresses:
        raise URLRefused(f"the host name {host!r} has no addresses.")
    for text in addresses:
        _refuse_address(host, ipaddress.ip_address(text.split("%", 1)[0]))
    return url
