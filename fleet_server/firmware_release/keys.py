"""The Ed25519 release key (RFC 8032) with the `cryptography` package. The private key
stays offline with the release manager: the server and the nodes hold only public keys
(hex, 64 digits), and verify the signature over the canonical manifest bytes."""
from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fleet_server.firmware_release.build import MANIFEST, SIGNATURE, read_bundle


def keygen(private_path: Path, passphrase: bytes | None = None) -> str:
    """Writes a new private key (PEM, PKCS#8, mode 0600, optionally encrypted) and
    returns its public key as hex."""
    private_path = Path(private_path)
    if private_path.exists():
        raise FileExistsError(f"{private_path} exists; a release key is never overwritten")
    key = Ed25519PrivateKey.generate()
    enc = (serialization.BestAvailableEncryption(passphrase) if passphrase
           else serialization.NoEncryption())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return public_hex(key)


def load_private(private_path: Path, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(private_path).read_bytes(), password=passphrase)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{private_path} is not an Ed25519 private key")
    return key


def public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def sign_bytes(key: Ed25519PrivateKey, data: bytes) -> str:
    return key.sign(data).hex()


def sign_bundle(bundle: Path, key: Ed25519PrivateKey) -> str:
    """Checks the bundle, signs its manifest, writes manifest.sig (hex); returns it."""
    raw, _, _ = read_bundle(Path(bundle))
    sig = sign_bytes(key, raw)
    (Path(bundle) / SIGNATURE).write_text(sig + "\n")
    return sig


def verify(data: bytes, signature_hex: str, public_key_hex: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex)).verify(bytes.fromhex(signature_hex), data)
        return True
    except (InvalidSignature, ValueError):
        return False


def signed_by(data: bytes, signature_hex: str, public_keys_hex: list[str]) -> str | None:
    """The first of public_keys_hex that signature_hex verifies under, else None."""
    for k in public_keys_hex:
        if verify(data, signature_hex, k):
            return k
    return None


__all__ = ["MANIFEST", "SIGNATURE", "keygen", "load_private", "public_hex", "sign_bundle", "sign_bytes",
           "signed_by", "verify"]
