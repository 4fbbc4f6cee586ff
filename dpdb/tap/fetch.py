"""Server-side reads of URL uploads (``UPLOAD=name,https://...``), restricted against request forgery.

A TAP upload may name a URL the service fetches. Unrestricted, that lets any client make the
service read its own network (the database's host, cloud metadata at 169.254.169.254, admin
pages on loopback). So by default:

* only ``http`` and ``https`` URLs, without credentials in them;
* every address the host name resolves to must be public: loopback, private (RFC 1918, ULA),
  link-local, multicast, reserved and unspecified addresses are refused, unless the operator
  allows the host or its network (:attr:`dpdb.tap.run.Limits.upload_url_allow`: host names or
  CIDR networks, e.g. ``data.example.org`` or ``10.1.0.0/16``);
* the connection goes to the address that was checked (not a second DNS answer), and redirects
  are followed by hand, at most 3, each one checked the same way;
* the body is cut at the upload size limit and the whole read at ``upload_url_timeout_s``.

Setting ``upload_url_allow`` to ``("*",)`` turns the address check off (a trusted network).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import urljoin, urlsplit

import httpx

from .run import Limits, TapError

__all__ = ["fetch_upload", "check_url"]

_MAX_REDIRECTS = 3


def _allowed(
    host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow: tuple[str, ...]
) -> bool:
    for item in allow:
        if item == "*" or item.lower() == host.lower():
            return True
        try:
            if address in ipaddress.ip_network(item, strict=False):
                return True
        except ValueError:
            continue
    return address.is_global and not address.is_multicast


def check_url(name: str, url: str, limits: Limits) -> tuple[str, str]:
    """(host, address to connect to) of an upload URL the service may read; :class:`TapError` if not."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TapError(f"UPLOAD {name}: {url!r} is not an http(s) URL")
    if parts.username or parts.password:
        raise TapError(f"UPLOAD {name}: the URL must not carry credentials")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise TapError(f"UPLOAD {name}: cannot resolve {host} ({e})") from e
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    for address in addresses:
        if not _allowed(host, address, limits.upload_url_allow):
            raise TapError(
                f"UPLOAD {name}: {host} resolves to {address}, a non-public address this service does not "
                "read from (an operator may allow it: upload_url_allow)",
                403,
            )
    return host, str(addresses[0])


def fetch_upload(name: str, url: str, limits: Limits) -> bytes:
    """The body at ``url`` (see the module for the checks); at most ``limits.upload_max_bytes``."""
    deadline = time.monotonic() + limits.upload_url_timeout_s
    for _ in range(_MAX_REDIRECTS + 1):
        host, address = check_url(name, url, limits)
        parts = urlsplit(url)
        # Connect to the checked address; the Host header (and TLS server name) stay the URL's host.
        netloc = f"[{address}]" if ":" in address else address
        if parts.port:
            netloc += f":{parts.port}"
        target = parts._replace(netloc=netloc).geturl()
        remaining = max(0.1, deadline - time.monotonic())
        try:
            with httpx.Client(timeout=remaining, follow_redirects=False) as client:
                request = client.build_request(
                    "GET", target, headers={"Host": parts.netloc.rpartition("@")[2]},
                    extensions={"sni_hostname": host},
                )  # fmt: skip
                response = client.send(request, stream=True)
                try:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    response.raise_for_status()
                    declared = int(response.headers.get("content-length") or 0)
                    if declared > limits.upload_max_bytes:
                        raise TapError(f"UPLOAD {name}: {declared} bytes, above the limit of "
                                       f"{limits.upload_max_bytes}", 413)  # fmt: skip
                    data = bytearray()
                    for chunk in response.iter_bytes():
                        data += chunk
                        if len(data) > limits.upload_max_bytes:
                            raise TapError(f"UPLOAD {name}: more than the limit of {limits.upload_max_bytes} "
                                           "bytes", 413)  # fmt: skip
                        if time.monotonic() > deadline:
                            raise TapError(f"UPLOAD {name}: reading {url} took longer than "
                                           f"{limits.upload_url_timeout_s:g} s")  # fmt: skip
                    return bytes(data)
                finally:
                    response.close()
        except httpx.TimeoutException as e:
            raise TapError(
                f"UPLOAD {name}: reading {url} took longer than {limits.upload_url_timeout_s:g} s"
            ) from e
        except httpx.HTTPError as e:
            raise TapError(f"UPLOAD {name}: cannot read {url} ({e})") from e
    raise TapError(f"UPLOAD {name}: more than {_MAX_REDIRECTS} redirects from {url}")
