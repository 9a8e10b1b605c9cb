"""Who made a bundle: an Ed25519 signature over the exact bytes of ``manifest.json``.

The manifest lists the sha256 of every model file and the model id is a hash of the
manifest, so one signature over the manifest covers the whole bundle. The converter signs
with a private key kept off the device (``blastscope-convert sign``); the device holds only
public keys (``inference.trusted_keys``) and refuses a bundle that no trusted key signed,
unless ``inference.allow_unsigned`` says otherwise. The signature lives beside the
manifest in ``manifest.sig`` so signing never changes the model id.

Keys are written as ``ed25519:<base64 of the 32 raw bytes>``: one line that fits in a TOML
string and can be read aloud or compared by eye (``key_id`` is its short fingerprint).
The cryptography itself is pyca/cryptography's, not hand-written.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE = "manifest.sig"
MAX_SIGNATURE_BYTES = 4096  # a key and a signature in JSON: a few hundred bytes
KEY_PREFIX = "ed25519:"

#: The BlastScope release key. Its private half is kept off every device, with the person who
#: signs releases (docs/security.md, "Keys"). It signs the shipped bundles (models/) and the
#: offline tarballs. The trust and the revocation list ship with the software: a device's
#: config may add keys (a development device), never needs to list the release's (issue 36: an
#: upgraded device kept 0.3.0's list and refused the current model).
RELEASE_KEY = "ed25519:wLXqvPeObnuehlBsziM8wcO7Cvg04NwQC1Otns/Ikq8="
RELEASE_KEYS = (RELEASE_KEY,)

#: Keys whose private halves were lost with earlier build machines (issue 36): whoever finds one
#: could sign a model or a tarball, so nothing they signed is trusted, whatever a config says.
#: 2026-12f, 2026-12e, 2026-12d, 2026-12b and 2026-12 signed earlier cell-model releases; the
#: last the field-model releases.
REVOKED_KEYS: tuple[str, ...] = (
    "ed25519:0mvBUHKOFefV1Gi7as8eoh7PpWUBU7GI47eDnzcJkkc=",
    "ed25519:CQwpClPq2PqeWSzD1g951r82d3mBZk4ZuhsikIEGmAw=",
    "ed25519:JqhKLMI7b/1mbX7GL4jnheZ9Qgz1t01ZPfKRqYTxtnc=",
    "ed25519:up/zgk5drL39cQmvhDPBcYFwE34t51s8Bmeoz4Tr4bI=",
    "ed25519:LQIvzsLJdH6YvfwI0pEw2xsiFsMBsW5d4i3zRb5zou0=",
    "ed25519:spqZVJtp+NtBItj5KHBcKDdezEREJFaJN0jI+NBaB5E=",
)


class SignatureError(ValueError):
    """A key or a signature is malformed, or a bundle is not signed by a trusted key."""


def parse_public_key(text: str) -> Ed25519PublicKey:
    """``ed25519:<base64>`` to a key; the error says what is wrong with the text."""
    if not isinstance(text, str) or not text.startswith(KEY_PREFIX):
        raise SignatureError(f"public key {str(text)[:24]!r} must look like '{KEY_PREFIX}<base64 of 32 bytes>'")
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX):], validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise SignatureError(f"public key {text[:24]!r}... is not 32 bytes of base64") from None


def public_key_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode()


def key_id(text: str) -> str:
    """A short fingerprint of a public key, shown in status and logs."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Trust:
    """The public keys a device accepts bundles from, and whether unsigned ones may run."""

    keys: tuple[str, ...] = RELEASE_KEYS
    allow_unsigned: bool = False
    #: refused whatever ``keys`` holds: the shipped revocation list
    revoked: tuple[str, ...] = REVOKED_KEYS

    def __post_init__(self) -> None:
        for text in self.keys:
            parse_public_key(text)

    @classmethod
    def with_added(cls, added: tuple[str, ...], allow_unsigned: bool = False) -> "Trust":
        """The release's keys and ``added`` (a device's config), less the revoked ones."""
        return cls(RELEASE_KEYS + tuple(k for k in added if k not in RELEASE_KEYS), allow_unsigned)


def generate_key(path: Path) -> str:
    """Write a new private key (PEM, mode 0600, never overwriting) and return its public key."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SignatureError(f"{path}: already exists; a signing key is never overwritten") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return public_key_text(key.public_key())


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError:
        raise SignatureError(f"{path}: signing key not found") from None
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path}: not an Ed25519 key")
    return key


def sign_manifest(root: Path, key_path: Path, manifest_name: str = "manifest.json") -> str:
    """Sign ``root``'s manifest with the private key at ``key_path``; returns the public key."""
    key = load_private_key(key_path)
    public = public_key_text(key.public_key())
    signature = key.sign((Path(root) / manifest_name).read_bytes())
    tmp = Path(root) / f".{SIGNATURE}.tmp"
    tmp.write_text(json.dumps({"key": public, "signature": base64.b64encode(signature).decode()}, indent=2) + "\n")
    os.replace(tmp, Path(root) / SIGNATURE)
    return public


def verify_manifest(root: Path, manifest_bytes: bytes, trust: Trust) -> str | None:
    """The trusted public key that signed these manifest bytes; ``None`` for an unsigned
    bundle the trust allows. Anything else raises ``SignatureError`` saying why."""
    path = Path(root) / SIGNATURE
    if not path.exists() and not path.is_symlink():
        if trust.allow_unsigned:
            return None
        raise SignatureError(f"{path}: the bundle is not signed; this device runs only bundles signed by a trusted "
                             "key (inference.trusted_keys), or set inference.allow_unsigned = true to accept it")
    if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_SIGNATURE_BYTES:
        raise SignatureError(f"{path}: not a regular signature file of at most {MAX_SIGNATURE_BYTES} bytes")
    try:
        data = json.loads(path.read_text())
        signer, signature = data["key"], base64.b64decode(data["signature"], validate=True)
    except (OSError, ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise SignatureError(f"{path}: unreadable signature ({type(exc).__name__})") from None
    if signer in trust.revoked:
        raise SignatureError(f"{path}: signed by key {key_id(str(signer))}, which is revoked (its private half was "
                             "lost): install a bundle of the current release")
    if signer not in trust.keys:
        raise SignatureError(f"{path}: signed by key {key_id(str(signer))}, which this device does not trust "
                             f"(trusted: {', '.join(key_id(k) for k in trust.keys) or 'none'})")
    try:
        parse_public_key(signer).verify(signature, manifest_bytes)
    except InvalidSignature:
        raise SignatureError(f"{path}: the signature does not match manifest.json; the manifest was changed "
                             "after it was signed") from None
    return signer
