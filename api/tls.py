"""HTTPS for ``arclip serve --tls``: a local certificate authority and a server certificate.

A phone's browser opens its live camera only on a secure origin, so a laptop serving the phone
over the LAN needs HTTPS. Nothing public can vouch for ``https://192.168.1.20``, so, like mkcert,
we make a small CA once (``tls/ca.pem`` in the data dir, the one file a phone is asked to trust)
and issue the server certificate from it for localhost, 127.0.0.1, ::1 and the machine's LAN
addresses. When the addresses change (another network) only the server certificate is issued
again: a phone that trusts the CA keeps trusting the server.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import socket
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
# Apple refuses server certificates valid longer than 825 days even from a user-trusted CA.
SERVER_DAYS = 397
RENEW_BEFORE = dt.timedelta(days=30)
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")

_IP_KINDS = (ipaddress.IPv4Address, ipaddress.IPv6Address)


@dataclass(frozen=True)
class Certificate:
    """Where ``arclip serve --tls`` finds its files, and what the server certificate covers."""

    ca: Path  # the CA certificate: what a phone (or ``curl --cacert``) trusts
    cert: Path  # the server certificate
    key: Path  # its private key (mode 0600)
    names: tuple[str, ...]
    fingerprint: str  # SHA-256 of the CA, to compare on the phone


def lan_addresses() -> list[str]:
    """This machine's non-loopback IP addresses, found locally (no packet is sent)."""
    found: list[str] = []
    with contextlib.suppress(OSError):
        for *_, sockaddr in socket.getaddrinfo(socket.gethostname(), None):
            found.append(str(sockaddr[0]))
    found.extend(_interface_addresses())
    addresses = []
    for text in dict.fromkeys(found):
        try:
            address = ipaddress.ip_address(text.split("%")[0])
        except ValueError:
            continue
        if not (address.is_loopback or address.is_link_local or address.is_unspecified):
            addresses.append(str(address))
    return addresses


def _interface_addresses() -> list[str]:
    """IPv4 addresses of the network interfaces (Linux; elsewhere the host name's addresses serve)."""
    if not sys.platform.startswith("linux"):
        return []
    import fcntl
    import struct

    siocgifaddr = 0x8915
    found = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            with contextlib.suppress(OSError):
                packed = fcntl.ioctl(probe.fileno(), siocgifaddr, struct.pack("256s", name[:15].encode()))
                found.append(socket.inet_ntoa(packed[20:24]))
    return found


def ensure_certificate(directory: Path, names: Iterable[str] = ()) -> Certificate:
    """The CA and a server certificate under ``directory`` covering ``names`` and the local names.

    Kept files are reused while they cover every name and stay valid for a month more;
    otherwise a new server certificate is issued (from the kept CA, when it is still good).
    """
    wanted = tuple(dict.fromkeys([*LOCAL_NAMES, *(n for n in names if n and n not in ("0.0.0.0", "::"))]))
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / f"{name}.pem" for name in ("ca", "ca-key", "cert", "key")}
    ca_cert, ca_key = _load_ca(paths["ca"], paths["ca-key"])
    if ca_cert is None or ca_key is None:
        ca_cert, ca_key = _new_ca()
        _write_key(paths["ca-key"], ca_key)
        paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    if not _covers(paths["cert"], paths["key"], ca_cert, wanted):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _new_server_cert(key, ca_cert, ca_key, wanted)
        _write_key(paths["key"], key)
        paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fingerprint = ca_cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return Certificate(paths["ca"], paths["cert"], paths["key"], wanted, fingerprint)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _load_ca(
    cert_path: Path, key_path: Path
) -> tuple[x509.Certificate | None, ec.EllipticCurvePrivateKey | None]:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None, None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or cert.not_valid_after_utc - RENEW_BEFORE < _now():
        return None, None
    return cert, key


def _covers(cert_path: Path, key_path: Path, ca: x509.Certificate, names: tuple[str, ...]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    covered = {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))
    return (
        cert.issuer == ca.subject
        and key.public_key() == cert.public_key()
        and cert.not_valid_after_utc - RENEW_BEFORE > _now()
        and all(_normal(n) in covered for n in names)
    )


def _normal(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name


def _new_ca() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "arclip (local)"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"arclip local CA on {socket.gethostname()}"[:64]),
    ])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_server_cert(
    key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: tuple[str, ...]
) -> x509.Certificate:
    alternatives: list[x509.GeneralName] = []
    for name in names:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Created 0600 from the start: the key is never readable by others, even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


class ServeCaCertificate:
    """``GET /tls/ca.pem`` answers the CA certificate, so a phone can fetch it to trust it.

    Wrapped around the app by ``arclip serve --tls`` only; the file is public by nature.
    """

    path = "/tls/ca.pem"

    def __init__(self, app, ca: Path) -> None:  # type: ignore[no-untyped-def]
        self.app = app
        self.body = ca.read_bytes()

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/x-x509-ca-cert"),
                (b"content-length", str(len(self.body)).encode()),
                (b"content-disposition", b'attachment; filename="arclip-ca.pem"'),
            ],
        })
        await send({"type": "http.response.body", "body": self.body if scope["method"] == "GET" else b""})
