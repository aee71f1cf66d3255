"""A school's own small certificate authority, for MQTT over TLS (8883) and HTTPS
(docs/security.md, "TLS"): `campusfleet certs init` makes a CA and a server
certificate, `campusfleet certs server` issues another server certificate from it.

- The CA: a self-signed certificate (basicConstraints CA:TRUE, pathlen 0, keyCertSign),
  valid 10 years. Its certificate (`ca.pem`) goes into every node's flash and every
  client's trust store; its key (`ca.key`) signs server certificates and should then
  be kept offline.
- A server certificate (`server.pem` + `server.key`) for the broker and uvicorn, valid
  825 days (what browsers and Apple platforms accept for a server certificate), with a
  subjectAltName entry for each host: DNS names as dNSName, IPv4 and IPv6 addresses as
  iPAddress (clients match an address only against iPAddress entries).
- Keys are ECDSA P-256 (Mbed TLS on the ESP32 and the unix port verifies them, and
  they are small); every key file is written 0600 and never overwritten by accident.

With a real CA (the school's or an education network's), none of this is needed:
give Mosquitto and uvicorn the certificate and key it issued, and the nodes its CA
certificate (docs/security.md)."""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
CA_DAYS = 3650
SERVER_DAYS = 825
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
# Issued a little in the past, so a client whose clock is a few minutes behind (a node
# right after NTP, a laptop) does not see a certificate from the future.
_BACKDATE = dt.timedelta(minutes=10)
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")


class CertError(Exception):
    """A user error: existing files, a missing CA, a bad host name."""


@dataclass(frozen=True)
class Issued:
    ca_cert: Path
    ca_key: Path | None
    server_cert: Path
    server_key: Path
    hosts: tuple[str, ...]
    not_after: dt.datetime


def parse_hosts(text: str | None) -> list[str]:
    """'fleet.school.lan, 10.1.2.3,::1' -> the hosts, in order, without repeats.
    [::1] with brackets is accepted too."""
    hosts: list[str] = []
    for part in (text or "").split(","):
        h = part.strip()
        if h.startswith("[") and h.endswith("]"):
            h = h[1:-1]
        if h and h not in hosts:
            hosts.append(h)
    return hosts


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    name = host.lower().rstrip(".")
    labels = name.split(".")
    if labels and labels[0] == "*":      # a wildcard, left-most label only
        labels = labels[1:]
    if not (name.isascii() and 0 < len(name) <= 253 and labels and all(_LABEL.match(lb) for lb in labels)):
        raise CertError(f"not a DNS name or IP address: {host!r}")
    return x509.DNSName(name)


def _write(path: Path, data: bytes, private: bool, force: bool) -> None:
    """Write a new file; a key is created 0600 from the start (never world-readable,
    not even for a moment)."""
    if path.exists() and not force:
        raise CertError(f"{path} exists; remove it or pass --force")
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600 if private else 0o644)  # whatever the umask did
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def make_ca(school: str, days: int = CA_DAYS) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    school = school.strip()
    if not school:
        raise CertError("the school name is empty")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, school[:64]),
        x509.NameAttribute(NameOID.COMMON_NAME, f"{school[:40]} CampusFleet CA"),
    ])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_server_cert(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, hosts: list[str],
                     days: int = SERVER_DAYS) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    if not hosts:
        raise CertError("a server certificate needs at least one host (--hosts)")
    sans = [_san(h) for h in hosts]
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    org = ca_cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    subject = x509.Name(([org[0]] if org else []) + [x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64])])
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=False, crl_sign=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def load_ca(directory: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not cert_path.exists() or not key_path.exists():
        raise CertError(f"no CA in {directory} ({CA_CERT} and {CA_KEY}); run `campusfleet certs init` first")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertError(f"{key_path} is not an EC key made by `campusfleet certs init`")
    return key, cert


def issue_server(directory: Path, hosts: list[str], *, days: int = SERVER_DAYS, force: bool = False,
                 name: str = "server") -> Issued:
    """A new server certificate from the CA in `directory`: {name}.pem + {name}.key."""
    directory = Path(directory)
    ca_key, ca_cert = load_ca(directory)
    key, cert = make_server_cert(ca_key, ca_cert, hosts, days)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    if not force:
        for p in (cert_path, key_path):
            if p.exists():
                raise CertError(f"{p} exists; remove it or pass --force")
    _write(key_path, _key_pem(key), private=True, force=True)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), private=False, force=True)
    return Issued(directory / CA_CERT, directory / CA_KEY, cert_path, key_path, tuple(hosts),
                  cert.not_valid_after_utc)


def init(directory: Path, school: str, hosts: list[str] | None = None, *, ca_days: int = CA_DAYS,
         server_days: int = SERVER_DAYS, force: bool = False) -> Issued:
    """A new CA for the school and a first server certificate, in `directory` (made
    0700 if new). Refuses to replace an existing CA unless force: every node trusts it."""
    directory = Path(directory)
    hosts = list(hosts or DEFAULT_HOSTS)
    for h in hosts:
        _san(h)   # check every host before anything is written
    if not force:
        for n in (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY):
            if (directory / n).exists():
                raise CertError(f"{directory / n} exists; remove it or pass --force "
                                "(a new CA means every node needs the new ca.pem)")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key, cert = make_ca(school, ca_days)
    _write(directory / CA_KEY, _key_pem(key), private=True, force=True)
    _write(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM), private=False, force=True)
    return issue_server(directory, hosts, days=server_days, force=True)
