"""Signed indicator packs: Ed25519 keys, detached signatures and a trust store of partner keys.

A partner signs the exact bytes of a pack file; the signature lives next to it in
``<pack>.sig`` (JSON). Before a pack from a user path is used, its signature is checked against
the *trust store*, a folder of partner public keys that each service manages itself::

    <trust dir>/                       $RISKENGINE_TRUST_DIR, else ~/.config/riskengine/trust
        douane-rotterdam-1a2b3c4d5e6f7a8b.pub   PEM, one Ed25519 public key per file
        trust.yaml                     per key: partner, country, expiry, allowed pack id prefixes
        pack_versions.yaml             per pack id: the highest version verified (the floor)
        audit.jsonl                    floors raised, downgrades refused or allowed (append-only)

A verified pack whose version is below the floor of its pack id is refused (``downgrade``): an
old signed pack copied over a newer one does not roll the rules back. An operator who means to
go back runs ``riskengine indicators verify OLD.yaml --allow-downgrade``, which lowers the floor
and writes the downgrade to the audit file.

The signed message is ``b"riskengine-indicator-pack-v1\\n"`` followed by the canonical JSON of
every field of the ``.sig`` file except the signature itself (algorithm, key id, signer, signing
time, pack id and the SHA-256 of the pack bytes), so neither the pack nor what the signature says
about it can change without detection.

Packs shipped in ``riskengine/indicators/packs/`` are trusted like the code that ships them.
Packs saved inside a model directory are part of the model artifact: :func:`load_model_packs`
checks them against the SHA-256 digests recorded when the model was saved.

Example
-------
>>> from riskengine.indicators.signing import generate_keypair, sign_pack_file, TrustStore
>>> pair = generate_keypair("keys", "nl-douane-2025")                      # doctest: +SKIP
>>> sign_pack_file("nl.yaml", pair.private_key, signer="Douane Rotterdam")  # doctest: +SKIP
>>> store = TrustStore("trust")                                            # doctest: +SKIP
>>> store.add(pair.public_key, partner="Douane Rotterdam", country="NL")   # doctest: +SKIP
>>> verify_pack_file("nl.yaml", store).signer                              # doctest: +SKIP
'Douane Rotterdam'
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from riskengine.indicators.pack import (
    _EXTRA_COUNTRIES,
    _ID,
    IndicatorPack,
    PackError,
    Version,
    _safe_yaml,
    default_pack_path,
    load_pack,
    pack_files,
    parse_pack,
)
from riskengine.schema import ISO_COUNTRIES

log = logging.getLogger(__name__)

__all__ = [
    "ALLOW_UNSIGNED_ENV",
    "BARE_KEYS_ENV",
    "PASSPHRASE_ENV",
    "SIGNATURE_SUFFIX",
    "SIGNING_DOMAIN",
    "TRUST_DIR_ENV",
    "KeyPair",
    "PackSignature",
    "PackSignatureError",
    "SigningKeyError",
    "TrustStore",
    "TrustStoreError",
    "TrustedKey",
    "VerificationResult",
    "default_trust_dir",
    "generate_keypair",
    "is_builtin_pack",
    "key_id",
    "load_model_packs",
    "load_private_key",
    "load_public_key",
    "load_verified_pack",
    "load_verified_packs",
    "pack_file_digests",
    "private_key_is_encrypted",
    "read_signature",
    "sign_pack_file",
    "signature_path",
    "unsigned_packs_allowed",
    "verify_pack_file",
]

SIGNATURE_SUFFIX = ".sig"
SIGNATURE_FORMAT = "riskengine-indicator-pack-signature"
SIGNATURE_VERSION = 1
ALGORITHM = "ed25519"
SIGNING_DOMAIN = b"riskengine-indicator-pack-v1\n"
"""Prefix of every signed message, so a pack signature cannot be replayed in another protocol."""
TRUST_DIR_ENV = "RISKENGINE_TRUST_DIR"
BARE_KEYS_ENV = "RISKENGINE_TRUST_BARE_KEYS"
ALLOW_UNSIGNED_ENV = "RISKENGINE_ALLOW_UNSIGNED_PACKS"
PASSPHRASE_ENV = "RISKENGINE_KEY_PASSPHRASE"
TRUST_FILE = "trust.yaml"
VERSIONS_FILE = "pack_versions.yaml"
AUDIT_FILE = "audit.jsonl"
PRIVATE_KEY_SUFFIX = ".key"
PUBLIC_KEY_SUFFIX = ".pub"

_SIG_FIELDS = ("format", "version", "algorithm", "key_id", "signer", "signed_at", "pack_id",
               "sha256", "signature")
_TRUST_ENTRY_KEYS = ("key_id", "file", "partner", "country", "expires", "packs", "added")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}")
_TRUE = ("1", "true", "yes", "on")
_TRUST_HEADER = (
    "# Partner public keys trusted to sign indicator packs.\n"
    "# Managed by `riskengine indicators trust add|list|remove`; 'expires' (a date, inclusive) and\n"
    "# 'packs' (allowed pack id prefixes) may be edited by hand. A .pub file in this folder without\n"
    "# an entry here is ignored (RISKENGINE_TRUST_BARE_KEYS=1 trusts it for any pack).\n"
)


class PackSignatureError(PackError):
    """A pack whose signature is missing or does not verify.

    ``reason`` is one of ``unsigned``, ``untrusted``, ``tampered``, ``expired``,
    ``pack_not_allowed``, ``downgrade``, ``malformed`` or ``model_packs_changed``; ``path`` is
    the pack file.
    """

    def __init__(self, message: str, reason: str, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.path = None if path is None else str(path)


class SigningKeyError(ValueError):
    """A key file that cannot be used: not PEM, not Ed25519, the wrong kind, a wrong passphrase."""


class TrustStoreError(ValueError):
    """A trust store that cannot be read or changed as asked (duplicate or unknown key, bad entry)."""


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeyPair:
    """Files written by :func:`generate_keypair`."""

    private_key: Path
    public_key: Path
    key_id: str
    encrypted: bool


def key_id(public_key: Ed25519PublicKey) -> str:
    """The key id: the first 16 hex characters of the SHA-256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _passphrase_bytes(passphrase: str | bytes | None) -> bytes | None:
    if passphrase is None:
        return None
    out = passphrase.encode("utf-8") if isinstance(passphrase, str) else bytes(passphrase)
    if not out:
        raise SigningKeyError("the passphrase is empty; give a non-empty passphrase or none at all")
    return out


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode``; fail if it exists (no check-then-write race)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)  # the umask may have narrowed or the platform widened it


def generate_keypair(out_dir: str | Path, name: str, *,
                     passphrase: str | bytes | None = None) -> KeyPair:
    """Create an Ed25519 key pair: ``NAME.key`` (PKCS8 PEM, mode 0600, encrypted when a
    passphrase is given) and ``NAME.pub`` (PEM) in ``out_dir``. Existing files are never
    overwritten (``FileExistsError``): a replaced private key cannot be recovered.
    """
    if not isinstance(name, str) or not _KEY_NAME.fullmatch(name):
        raise ValueError(f"key name must be 1-100 letters, digits or . _ - (no path), got {name!r}; "
                         "e.g. nl-douane-2025")
    out = Path(out_dir)
    key_path, pub_path = out / f"{name}{PRIVATE_KEY_SUFFIX}", out / f"{name}{PUBLIC_KEY_SUFFIX}"
    existing = [str(p) for p in (key_path, pub_path) if p.exists()]
    if existing:
        raise FileExistsError(f"refusing to overwrite {', '.join(existing)}: choose another --name "
                              "or --out, or move the old key pair away first (partners who trust "
                              "the old public key would need the new one)")
    password = _passphrase_bytes(passphrase)
    private = Ed25519PrivateKey.generate()
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    private_pem = private.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8, encryption)
    public_pem = private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    out.mkdir(parents=True, exist_ok=True)
    _write_new_file(key_path, private_pem, 0o600)
    try:
        _write_new_file(pub_path, public_pem, 0o644)
    except BaseException:
        key_path.unlink(missing_ok=True)
        raise
    kid = key_id(private.public_key())
    log.info("generated Ed25519 key %s: %s, %s", kid, key_path, pub_path)
    return KeyPair(key_path, pub_path, kid, password is not None)


def _read_key_file(path: str | Path, what: str) -> tuple[Path, bytes]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p, p.read_bytes()


def private_key_is_encrypted(path: str | Path) -> bool:
    """Whether a private key file is passphrase-encrypted (PKCS8 ``ENCRYPTED PRIVATE KEY``)."""
    _, data = _read_key_file(path, "private key")
    return b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data


def load_private_key(path: str | Path, passphrase: str | bytes | None = None) -> Ed25519PrivateKey:
    """Read an Ed25519 private key (PKCS8 PEM). An encrypted key takes ``passphrase``, or else
    the passphrase in ``$RISKENGINE_KEY_PASSPHRASE``."""
    p, data = _read_key_file(path, "private key")
    if b"PRIVATE KEY-----" not in data:
        if b"PUBLIC KEY-----" in data:
            raise SigningKeyError(f"{p} is a public key; signing needs the private key (NAME.key "
                                  "written by `riskengine indicators keygen`)")
        raise SigningKeyError(f"{p} is not a PEM private key: expected a file starting with "
                              f"'-----BEGIN PRIVATE KEY-----', got {data[:40]!r}")
    encrypted = b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data
    password = None
    if encrypted:
        if passphrase is None:
            passphrase = os.environ.get(PASSPHRASE_ENV)
        if passphrase is None:
            raise SigningKeyError(f"{p} is encrypted: set {PASSPHRASE_ENV} or give the passphrase "
                                  "when asked")
        password = _passphrase_bytes(passphrase)
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except ValueError as exc:
        if encrypted:
            raise SigningKeyError(f"cannot decrypt {p}: wrong passphrase (or a damaged key "
                                  "file)") from exc
        raise SigningKeyError(f"{p} is not a valid PEM private key ({exc}); use the NAME.key "
                              "written by `riskengine indicators keygen`") from exc
    except (TypeError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"cannot read private key {p}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{p} holds a {type(key).__name__.lstrip('_')}; pack signatures use "
                              "Ed25519 keys (`riskengine indicators keygen`)")
    return key


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """Read an Ed25519 public key (PEM ``-----BEGIN PUBLIC KEY-----``)."""
    p, data = _read_key_file(path, "public key")
    if b"PRIVATE KEY-----" in data:
        raise SigningKeyError(f"{p} is a PRIVATE key: give the partner's public key (NAME.pub); "
                              "a private key must never leave the service that owns it")
    if b"-----BEGIN PUBLIC KEY-----" not in data:
        raise SigningKeyError(f"{p} is not a PEM public key: expected a file starting with "
                              f"'-----BEGIN PUBLIC KEY-----' (NAME.pub from `riskengine indicators "
                              f"keygen`), got {data[:40]!r}")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(f"{p} is not a valid PEM public key ({exc}); ask the partner for "
                              "the NAME.pub written by `riskengine indicators keygen`") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError(f"{p} holds a {type(key).__name__.lstrip('_')}; pack signatures use "
                              "Ed25519 keys (`riskengine indicators keygen`)")
    return key


# --------------------------------------------------------------------------------------------
# Signature files
# --------------------------------------------------------------------------------------------

def signature_path(pack_path: str | Path) -> Path:
    """The detached signature of a pack: ``partner.yaml`` → ``partner.yaml.sig``."""
    p = Path(pack_path)
    return p.with_name(p.name + SIGNATURE_SUFFIX)


def _signed_message(fields: Mapping[str, Any]) -> bytes:
    """The domain prefix and the canonical JSON (sorted keys, no spaces, ASCII) of the fields."""
    return SIGNING_DOMAIN + json.dumps(dict(fields), sort_keys=True, separators=(",", ":"),
                                       ensure_ascii=True).encode("ascii")


def _utc_now(now: dt.datetime | None = None) -> dt.datetime:
    now = now or dt.datetime.now(dt.timezone.utc)
    return now.replace(tzinfo=dt.timezone.utc) if now.tzinfo is None else now.astimezone(dt.timezone.utc)


def _parse_utc(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    if value.tzinfo is None:
        raise ValueError("no time zone")
    return value.astimezone(dt.timezone.utc)


@dataclass(frozen=True)
class PackSignature:
    """The content of a ``.sig`` file. ``fields`` holds every signed field as written."""

    key_id: str
    signer: str
    signed_at: dt.datetime
    pack_id: str
    sha256: str
    signature: bytes = field(repr=False)
    fields: dict = field(repr=False, compare=False, default_factory=dict)

    def signed_message(self) -> bytes:
        """The bytes the Ed25519 signature covers."""
        return _signed_message(self.fields)

    def to_dict(self) -> dict:
        return {**self.fields, "signature": base64.b64encode(self.signature).decode("ascii")}

    @classmethod
    def from_dict(cls, doc: Any, where: str = "<memory>") -> PackSignature:
        """Validate a parsed ``.sig`` document; any problem is a ``malformed``
        :class:`PackSignatureError`."""
        def bad(problem: str) -> PackSignatureError:
            return PackSignatureError(f"malformed signature file {where}: {problem}; ask the issuer "
                                      "to sign the pack again (`riskengine indicators sign`)",
                                      "malformed", where)

        if not isinstance(doc, Mapping):
            raise bad(f"expected a JSON object with keys {list(_SIG_FIELDS)}, got "
                      f"{type(doc).__name__}")
        missing = [k for k in _SIG_FIELDS if k not in doc]
        unknown = sorted(str(k) for k in doc if k not in _SIG_FIELDS)
        if missing or unknown:
            raise bad(f"missing {missing}, unknown {unknown}; expected keys {list(_SIG_FIELDS)}")
        if doc["format"] != SIGNATURE_FORMAT:
            raise bad(f"format is {doc['format']!r}, expected {SIGNATURE_FORMAT!r}")
        version = doc["version"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise bad(f"version must be the integer {SIGNATURE_VERSION}, got {version!r}")
        if version > SIGNATURE_VERSION:
            raise bad(f"version {version} was written by a newer riskengine (this one reads "
                      f"version {SIGNATURE_VERSION}); upgrade riskengine")
        if doc["algorithm"] != ALGORITHM:
            raise bad(f"algorithm {doc['algorithm']!r} is not supported, expected {ALGORITHM!r}")
        for key, pattern, text in (("key_id", _KEY_ID, "16 lowercase hex characters"),
                                   ("sha256", _SHA256, "64 lowercase hex characters")):
            if not isinstance(doc[key], str) or not pattern.fullmatch(doc[key]):
                raise bad(f"{key} must be {text}, got {doc[key]!r}")
        for key in ("signer", "pack_id", "signed_at"):
            if not isinstance(doc[key], str) or not doc[key].strip():
                raise bad(f"{key} must be a non-empty string, got {doc[key]!r}")
        try:
            signed_at = _parse_utc(doc["signed_at"])
        except ValueError:
            raise bad(f"signed_at must be an ISO 8601 UTC time such as 2025-06-01T12:00:00Z, got "
                      f"{doc['signed_at']!r}") from None
        sig_text = doc["signature"]
        try:
            if not isinstance(sig_text, str):
                raise ValueError
            signature = base64.b64decode(sig_text.encode("ascii"), validate=True)
        except (ValueError, binascii.Error, UnicodeEncodeError):
            raise bad(f"signature must be base64 text, got {str(sig_text)[:40]!r}") from None
        if len(signature) != 64:
            raise bad(f"an Ed25519 signature has 64 bytes, this one has {len(signature)}")
        fields = {k: doc[k] for k in _SIG_FIELDS if k != "signature"}
        return cls(doc["key_id"], doc["signer"], signed_at, doc["pack_id"], doc["sha256"],
                   signature, fields)


def read_signature(path: str | Path) -> PackSignature:
    """Read and validate a ``.sig`` file (not the signature itself: see :func:`verify_pack_file`)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackSignatureError(f"malformed signature file {p}: not JSON text ({exc}); ask the "
                                 "issuer to sign the pack again (`riskengine indicators sign`)",
                                 "malformed", p) from exc
    return PackSignature.from_dict(doc, str(p))


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` in one step, so a reader never sees half a file. Signatures and the
    trust store are public, not secret: readable by the service's own user (mode 0644)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sign_pack_file(path: str | Path, private_key: Ed25519PrivateKey | str | Path, *, signer: str,
                   passphrase: str | bytes | None = None, overwrite: bool = False,
                   now: dt.datetime | None = None) -> PackSignature:
    """Sign the exact bytes of a pack file and write ``<pack>.sig`` next to it.

    The pack is parsed first, so a broken pack is never signed. ``private_key`` is a key or the
    path of a ``NAME.key`` (see :func:`load_private_key` for ``passphrase``). An existing
    signature is replaced only with ``overwrite=True``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"indicator pack not found: {p}")
    if not isinstance(signer, str) or not signer.strip() or "\n" in signer or len(signer) > 200:
        raise ValueError(f"signer must be a name on one line (at most 200 characters), e.g. "
                         f"'Douane Rotterdam', got {signer!r}")
    sig_path = signature_path(p)
    if sig_path.exists() and not overwrite:
        raise FileExistsError(f"{sig_path} exists; pass --force (overwrite=True) to replace it")
    raw = p.read_bytes()
    pack = parse_pack(raw, source=str(p))
    key = private_key if isinstance(private_key, Ed25519PrivateKey) else load_private_key(
        private_key, passphrase)
    fields = {
        "format": SIGNATURE_FORMAT,
        "version": SIGNATURE_VERSION,
        "algorithm": ALGORITHM,
        "key_id": key_id(key.public_key()),
        "signer": signer.strip(),
        "signed_at": _utc_now(now).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "pack_id": pack.id,
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    signature = base64.b64encode(key.sign(_signed_message(fields))).decode("ascii")
    sig = PackSignature.from_dict({**fields, "signature": signature}, str(sig_path))
    _atomic_write(sig_path, (json.dumps(sig.to_dict(), indent=2, ensure_ascii=False) + "\n")
                  .encode("utf-8"))
    log.info("signed %s (pack %r, sha256 %s) with key %s as %r", p, pack.id, fields["sha256"],
             fields["key_id"], fields["signer"])
    return sig


# --------------------------------------------------------------------------------------------
# Trust store
# --------------------------------------------------------------------------------------------

def default_trust_dir() -> Path:
    """``$RISKENGINE_TRUST_DIR``, else ``~/.config/riskengine/trust``."""
    env = os.environ.get(TRUST_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".config" / "riskengine" / "trust"


def _utc_today(now: dt.datetime | dt.date | None = None) -> dt.date:
    if isinstance(now, dt.date) and not isinstance(now, dt.datetime):
        return now
    return _utc_now(now).date()


def _parse_date(value: Any, what: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{what} must be a date such as 2026-12-31, got {value!r}")


def _check_country(value: Any, what: str) -> str:
    if not isinstance(value, str) or (value.strip().upper() not in ISO_COUNTRIES
                                      and value.strip().upper() not in _EXTRA_COUNTRIES):
        raise ValueError(f"{what} must be an ISO 3166 alpha-2 code such as NL or BE (EU or ZZ for "
                         f"an issuer that is not one national service), got {value!r}")
    return value.strip().upper()


def _check_prefixes(values: Any, what: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise ValueError(f"{what} must be a list of pack id prefixes such as [nl-customs-], got "
                         f"{values!r}")
    for v in values:
        if not isinstance(v, str) or not _ID.fullmatch(v):
            raise ValueError(f"{what}: a pack id prefix is 1-128 letters, digits or . _ : - "
                             f"(starting with a letter or digit), got {v!r}")
    return tuple(values)


def _check_partner(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or "\n" in value or len(value) > 200:
        raise ValueError(f"{what} must be the partner's name on one line (at most 200 characters), "
                         f"e.g. 'Douane Rotterdam', got {value!r}")
    return value.strip()


@dataclass(frozen=True)
class TrustedKey:
    """A partner public key in the trust store.

    ``expires`` (inclusive, UTC) ends the trust; ``packs`` restricts it to pack ids starting with
    one of the prefixes (empty: any pack)."""

    key_id: str
    public_key: Ed25519PublicKey = field(repr=False, compare=False)
    file: Path
    partner: str
    country: str | None = None
    expires: dt.date | None = None
    packs: tuple[str, ...] = ()
    added: str | None = None

    def is_expired(self, now: dt.datetime | dt.date | None = None) -> bool:
        """Whether the key's last day of trust is before today (UTC) or ``now``."""
        return self.expires is not None and _utc_today(now) > self.expires

    def allows_pack(self, pack_id: str) -> bool:
        """Whether this key may sign the pack ``pack_id``."""
        return not self.packs or any(pack_id.startswith(prefix) for prefix in self.packs)

    def to_dict(self) -> dict:
        return {"key_id": self.key_id, "file": self.file.name, "partner": self.partner,
                "country": self.country,
                "expires": None if self.expires is None else self.expires.isoformat(),
                "packs": list(self.packs), "added": self.added}


class TrustStore:
    """The partner keys this service trusts to sign indicator packs.

    A folder of ``*.pub`` PEM files plus ``trust.yaml`` with each key's partner, country,
    expiry and allowed pack id prefixes. A missing folder is an empty store. A ``.pub`` without
    an entry is ignored (with a warning) unless ``bare_keys`` (default:
    ``$RISKENGINE_TRUST_BARE_KEYS=1``), which trusts it for any pack id without expiry.

    >>> store = TrustStore("trust")                                        # doctest: +SKIP
    >>> store.add("be-douane.pub", partner="Douane Antwerpen", country="BE",
    ...           packs=["be-"])                                           # doctest: +SKIP
    >>> [k.key_id for k in store.keys()]                                   # doctest: +SKIP
    """

    def __init__(self, path: str | Path | None = None, *, bare_keys: bool | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_trust_dir()
        self.bare_keys = (os.environ.get(BARE_KEYS_ENV, "").strip().lower() in _TRUE
                          if bare_keys is None else bare_keys)
        self._keys: dict[str, TrustedKey] | None = None

    def __repr__(self) -> str:
        return f"TrustStore({str(self.path)!r})"

    @property
    def trust_file(self) -> Path:
        return self.path / TRUST_FILE

    # -- reading ---------------------------------------------------------------------------
    def _entries(self) -> list[dict]:
        tf = self.trust_file
        if not tf.exists():
            return []
        where = str(tf)
        try:
            doc = _safe_yaml(tf.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise TrustStoreError(f"{where}: not valid YAML ({exc}); fix or remove the file") from exc
        if doc is None:
            return []
        if not isinstance(doc, Mapping) or set(doc) - {"keys"}:
            raise TrustStoreError(f"{where}: expected a mapping with one key 'keys' (a list of "
                                  f"entries), got {doc!r:.80}")
        entries = doc.get("keys") or []
        if not isinstance(entries, list):
            raise TrustStoreError(f"{where}: 'keys' must be a list of entries with "
                                  f"{list(_TRUST_ENTRY_KEYS)}, got {type(entries).__name__}")
        out: list[dict] = []
        for i, e in enumerate(entries):
            what = f"{where}: keys[{i}]"
            try:
                if not isinstance(e, Mapping):
                    raise ValueError(f"must be a mapping with {list(_TRUST_ENTRY_KEYS)}")
                unknown = [k for k in e if k not in _TRUST_ENTRY_KEYS]
                if unknown:
                    raise ValueError(f"unknown key(s) {unknown}; valid keys: {list(_TRUST_ENTRY_KEYS)}")
                kid = str(e.get("key_id", "")).lower()
                if not _KEY_ID.fullmatch(kid):
                    raise ValueError(f"key_id must be 16 hex characters, got {e.get('key_id')!r}")
                file = e.get("file")
                if not isinstance(file, str) or Path(file).name != file or not file.endswith(PUBLIC_KEY_SUFFIX):
                    raise ValueError(f"file must be the name of a {PUBLIC_KEY_SUFFIX} file in the "
                                     f"trust store, got {file!r}")
                out.append({
                    "key_id": kid, "file": file,
                    "partner": _check_partner(e.get("partner"), "partner"),
                    "country": None if e.get("country") is None else _check_country(e["country"], "country"),
                    "expires": None if e.get("expires") is None else _parse_date(e["expires"], "expires"),
                    "packs": _check_prefixes(e.get("packs"), "packs"),
                    "added": None if e.get("added") is None else str(e["added"]),
                })
            except ValueError as exc:
                raise TrustStoreError(f"{what}: {exc}") from None
        return out

    def _load(self) -> dict[str, TrustedKey]:
        if self._keys is not None:
            return self._keys
        keys: dict[str, TrustedKey] = {}
        if not self.path.exists():
            log.debug("trust store %s does not exist: no partner key is trusted", self.path)
            self._keys = keys
            return keys
        if not self.path.is_dir():
            raise TrustStoreError(f"trust store {self.path} is not a folder; give a folder of "
                                  "partner public keys (--trust DIR)")
        entries = self._entries()
        by_file: dict[str, dict] = {}
        for e in entries:
            if e["file"] in by_file:
                raise TrustStoreError(f"{self.trust_file}: {e['file']} is listed twice; keep one entry")
            by_file[e["file"]] = e
        for f in sorted(self.path.glob(f"*{PUBLIC_KEY_SUFFIX}")):
            try:
                pk = load_public_key(f)
            except SigningKeyError as exc:
                raise TrustStoreError(f"trust store {self.path}: {exc}. Remove or replace "
                                      f"{f.name}") from exc
            kid = key_id(pk)
            e = by_file.pop(f.name, None)
            if e is None and not self.bare_keys:
                # A key file dropped into the folder is not a trust decision: it would sign any
                # pack id without expiry. It counts only once `trust add` gave it an entry.
                log.warning("trust store %s: %s (key %s) has no entry in %s and is NOT trusted; add it "
                            "with `riskengine indicators trust add %s --name PARTNER --packs PREFIX` "
                            "(or set %s=1 to trust bare keys for any pack)", self.path, f.name, kid,
                            TRUST_FILE, f, BARE_KEYS_ENV)
                continue
            if kid in keys:
                raise TrustStoreError(f"trust store {self.path}: key {kid} is in both "
                                      f"{keys[kid].file.name} and {f.name}; remove one")
            if e is not None and e["key_id"] != kid:
                raise TrustStoreError(
                    f"trust store {self.path}: {f.name} holds key {kid}, but {TRUST_FILE} lists it "
                    f"as key {e['key_id']} ({e['partner']}): the file was replaced. Remove it and "
                    "add the partner's key again with `riskengine indicators trust add`")
            if e is None:
                keys[kid] = TrustedKey(kid, pk, f, partner=f.stem)
            else:
                keys[kid] = TrustedKey(kid, pk, f, e["partner"], e["country"], e["expires"],
                                       e["packs"], e["added"])
        for name, e in by_file.items():
            log.warning("trust store %s: %s lists key %s (%s) but %s is missing: that key is not "
                        "trusted", self.path, TRUST_FILE, e["key_id"], e["partner"], name)
        self._keys = keys
        return keys

    def reload(self) -> None:
        """Forget what was read; the next access reads the folder again."""
        self._keys = None

    def keys(self) -> list[TrustedKey]:
        """Every trusted key, by partner then key id."""
        return sorted(self._load().values(), key=lambda k: (k.partner.lower(), k.key_id))

    def get(self, key_id: str) -> TrustedKey | None:
        """The trusted key with this id, or ``None``."""
        return self._load().get(key_id)

    def __contains__(self, key_id: object) -> bool:
        return isinstance(key_id, str) and key_id in self._load()

    def __len__(self) -> int:
        return len(self._load())

    # -- changing --------------------------------------------------------------------------
    def _write_entries(self, keys: Iterable[TrustedKey]) -> None:
        entries = []
        for k in sorted(keys, key=lambda k: (k.partner.lower(), k.key_id)):
            e: dict[str, Any] = {"key_id": k.key_id, "file": k.file.name, "partner": k.partner}
            if k.country:
                e["country"] = k.country
            if k.expires:
                e["expires"] = k.expires.isoformat()
            if k.packs:
                e["packs"] = list(k.packs)
            if k.added:
                e["added"] = k.added
            entries.append(e)
        text = _TRUST_HEADER + yaml.safe_dump({"keys": entries}, sort_keys=False,
                                               allow_unicode=True, width=100)
        _atomic_write(self.trust_file, text.encode("utf-8"))

    def add(self, public_key_file: str | Path, *, partner: str, country: str | None = None,
            expires: str | dt.date | None = None, packs: Iterable[str] = (),
            today: dt.date | None = None) -> TrustedKey:
        """Trust a partner's public key (a PEM file, copied into the store).

        Refuses a key that is not an Ed25519 public key (a private key included), a key that is
        already trusted, and an expiry date in the past.
        """
        pk = load_public_key(public_key_file)
        kid = key_id(pk)
        partner = _check_partner(partner, "partner name (--name)")
        country = None if country is None else _check_country(country, "country (--country)")
        exp = None if expires is None else _parse_date(expires, "expiry (--expires)")
        if exp is not None and exp < _utc_today(today):
            raise ValueError(f"expiry (--expires) {exp} is in the past; give a future date or none")
        prefixes = _check_prefixes([packs] if isinstance(packs, str) else list(packs),
                                   "allowed packs (--packs)")
        current = self._load()
        if kid in current:
            old = current[kid]
            raise TrustStoreError(f"key {kid} is already trusted (partner {old.partner!r}, file "
                                  f"{old.file.name}); to change its details, run `riskengine "
                                  f"indicators trust remove {kid}` and add it again")
        self.path.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^a-z0-9]+", "-", partner.lower()).strip("-")[:60] or "partner"
        target = self.path / f"{stem}-{kid}{PUBLIC_KEY_SUFFIX}"
        pem = pk.public_bytes(serialization.Encoding.PEM,
                              serialization.PublicFormat.SubjectPublicKeyInfo)
        _write_new_file(target, pem, 0o644)
        added = _utc_now().strftime("%Y-%m-%dT%H:%M:%SZ")
        new = TrustedKey(kid, pk, target, partner, country, exp, prefixes, added)
        try:
            self._write_entries([*current.values(), new])
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        self.reload()
        log.info("trust store %s: added key %s of %s", self.path, kid, partner)
        return new

    def remove(self, key_id: str) -> TrustedKey:
        """Stop trusting a key: delete its file and its entry. Packs it signed stop loading."""
        kid = str(key_id).strip().lower()
        current = self._load()
        if kid not in current:
            known = ", ".join(f"{k.key_id} ({k.partner})" for k in self.keys()) or "none"
            raise TrustStoreError(f"no key {key_id!r} in the trust store {self.path}; trusted keys: "
                                  f"{known} (`riskengine indicators trust list`)")
        gone = current[kid]
        self._write_entries([k for k in current.values() if k.key_id != kid])
        gone.file.unlink(missing_ok=True)
        self.reload()
        log.info("trust store %s: removed key %s of %s", self.path, kid, gone.partner)
        return gone


    # -- version floors (rollback protection) ----------------------------------------------
    @property
    def versions_file(self) -> Path:
        return self.path / VERSIONS_FILE

    @property
    def audit_file(self) -> Path:
        return self.path / AUDIT_FILE

    def version_floors(self) -> dict[str, dict[str, Any]]:
        """Pack id → {version, sha256, key_id, at}: the highest version verified of each pack."""
        f = self.versions_file
        if not f.exists():
            return {}
        try:
            doc = _safe_yaml(f.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise TrustStoreError(f"{f}: not valid YAML ({exc}); restore it from a backup (deleting "
                                  "it forgets every version floor)") from exc
        packs = (doc or {}).get("packs") if isinstance(doc, Mapping) else None
        if not isinstance(packs, Mapping) or not all(
                isinstance(v, Mapping) and "version" in v for v in packs.values()):
            raise TrustStoreError(f"{f}: expected 'packs: {{PACK_ID: {{version: ...}}}}', got "
                                  f"{doc!r:.80}; restore it from a backup")
        return {str(k): dict(v) for k, v in packs.items()}

    def version_floor(self, pack_id: str) -> Version | None:
        """The lowest version of ``pack_id`` that still verifies (``None``: never seen)."""
        entry = self.version_floors().get(pack_id)
        return None if entry is None else Version.parse(entry["version"], f"{VERSIONS_FILE}: {pack_id}")

    def audit(self, event: str, **details: Any) -> None:
        """Append one event to the trust store's audit file (JSON lines, never rewritten)."""
        line = json.dumps({"at": _utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"), "event": event, **details},
                          sort_keys=True, default=str)
        fd = os.open(self.audit_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (line + "\n").encode("utf-8"))
        finally:
            os.close(fd)

    def check_version(self, pack: IndicatorPack, result: VerificationResult, *,
                      allow_downgrade: bool = False) -> None:
        """Refuse ``pack`` below the floor of its id (``downgrade``), else raise the floor to it.

        ``allow_downgrade`` accepts a lower version and lowers the floor to it; the downgrade is
        written to the audit file. A floor that cannot be written (read-only trust store) is
        logged as an error; the pack is still checked against the floor that was read.
        """
        floor = self.version_floor(pack.id)
        details = {"pack_id": pack.id, "version": str(pack.version), "sha256": result.sha256,
                   "key_id": result.key_id, "path": result.path,
                   "previous": None if floor is None else str(floor)}
        if floor is not None and pack.version < floor:
            if not allow_downgrade:
                self._try_audit("downgrade_refused", details)
                raise PackSignatureError(
                    f"downgrade: {result.path} is pack {pack.id!r} version {pack.version}, but version "
                    f"{floor} was already verified with the trust store {self.path}; an older signed "
                    "pack is refused so that the rules cannot be rolled back. Install the current "
                    f"version from {result.partner}, or, to go back on purpose, run `riskengine "
                    f"indicators verify {result.path} --allow-downgrade` (audited)", "downgrade",
                    result.path)
            log.warning("DOWNGRADE allowed: pack %r from version %s to %s (%s)", pack.id, floor,
                        pack.version, result.path)
            self._set_floor(pack, result, "downgrade_allowed", details)
        elif floor is None or pack.version > floor:
            self._set_floor(pack, result, "floor_raised", details)

    def _set_floor(self, pack: IndicatorPack, result: VerificationResult, event: str,
                   details: dict[str, Any]) -> None:
        try:
            floors = self.version_floors()
            floors[pack.id] = {"version": str(pack.version), "sha256": result.sha256,
                               "key_id": result.key_id,
                               "at": _utc_now().strftime("%Y-%m-%dT%H:%M:%SZ")}
            text = ("# Highest version of each indicator pack verified with this trust store: a\n"
                    "# lower version is refused (riskengine indicators verify --allow-downgrade).\n"
                    + yaml.safe_dump({"packs": dict(sorted(floors.items()))}, sort_keys=False))
            _atomic_write(self.versions_file, text.encode("utf-8"))
            self.audit(event, **details)
        except OSError as exc:
            log.error("cannot record version %s of pack %r in %s: %s; rollback protection for this "
                      "pack stays at the version recorded before", pack.version, pack.id,
                      self.versions_file, exc)
            return
        log.info("pack %r: version floor %s -> %s", pack.id, details["previous"], pack.version)

    def _try_audit(self, event: str, details: dict[str, Any]) -> None:
        try:
            self.audit(event, **details)
        except OSError as exc:
            log.error("cannot write the trust store audit %s: %s", self.audit_file, exc)


def _as_store(trust: TrustStore | str | Path | None) -> TrustStore:
    return trust if isinstance(trust, TrustStore) else TrustStore(trust)


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VerificationResult:
    """A pack whose signature verified: who signed it, with which key, over which bytes."""

    path: str
    pack_id: str
    key_id: str
    signer: str
    partner: str
    country: str | None
    signed_at: dt.datetime
    sha256: str
    key_expires: dt.date | None = None

    def to_dict(self) -> dict:
        return {"path": self.path, "pack_id": self.pack_id, "key_id": self.key_id,
                "signer": self.signer, "partner": self.partner, "country": self.country,
                "signed_at": self.signed_at.strftime("%Y-%m-%dT%H:%M:%SZ"), "sha256": self.sha256,
                "key_expires": None if self.key_expires is None else self.key_expires.isoformat()}


def is_builtin_pack(path: str | Path) -> bool:
    """Whether ``path`` is a pack shipped with the engine (trusted like its code)."""
    p = Path(path)
    return p.is_file() and p.resolve().parent == default_pack_path().resolve().parent


def _read_pack_bytes(path: str | Path) -> tuple[Path, bytes]:
    from riskengine.indicators.pack import read_pack_bytes

    return read_pack_bytes(path, folder_hint="use load_verified_packs() for every pack in a folder")


def _verify(path: str | Path, trust: TrustStore | str | Path | None,
            now: dt.datetime | dt.date | None,
            allow_downgrade: bool = False) -> tuple[VerificationResult, IndicatorPack]:
    # The bytes are read once: the same bytes are verified and then parsed.
    p, raw = _read_pack_bytes(path)
    sig_path = signature_path(p)
    if not sig_path.exists():
        raise PackSignatureError(
            f"unsigned: {p} has no signature file {sig_path.name}; ask the issuer for the signed "
            "pack and its .sig (`riskengine indicators sign`), or for local development only pass "
            f"--allow-unsigned (or set {ALLOW_UNSIGNED_ENV}=1)", "unsigned", p)
    sig = read_signature(sig_path)
    store = _as_store(trust)
    key = store.get(sig.key_id)
    if key is None:
        raise PackSignatureError(
            f"untrusted key {sig.key_id}: {p} is signed by {sig.signer!r} with a key that is not in "
            f"the trust store {store.path}; add the partner's public key with `riskengine "
            f"indicators trust add PARTNER.pub --name PARTNER` (obtained from the partner out of "
            f"band; check that its key id is {sig.key_id})", "untrusted", p)
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sig.sha256:
        raise PackSignatureError(
            f"tampered: the pack's bytes changed after signing: {p} has sha256 {digest}, the "
            f"signature covers {sig.sha256}; get the pack again from {key.partner}", "tampered", p)
    try:
        key.public_key.verify(sig.signature, sig.signed_message())
    except InvalidSignature:
        raise PackSignatureError(
            f"tampered: the pack's bytes changed after signing, or its signature file {sig_path.name} "
            f"was altered: the Ed25519 signature does not verify with key {key.key_id} of "
            f"{key.partner}; get the pack and its .sig again from {key.partner}", "tampered",
            p) from None
    if key.is_expired(now):
        raise PackSignatureError(
            f"expired: key {key.key_id} of {key.partner} expired on {key.expires}; ask "
            f"{key.partner} for the pack signed with their current key and trust that key with "
            "`riskengine indicators trust add`", "expired", p)
    pack = parse_pack(raw, source=str(p))
    if pack.id != sig.pack_id:
        raise PackSignatureError(
            f"malformed signature file {sig_path}: it names pack {sig.pack_id!r} but {p} is pack "
            f"{pack.id!r}; ask the issuer to sign the pack again", "malformed", p)
    if not key.allows_pack(pack.id):
        raise PackSignatureError(
            f"pack not allowed: key {key.key_id} of {key.partner} may sign packs whose id starts "
            f"with {list(key.packs)}, but {p} is pack {pack.id!r}; if {key.partner} really issues "
            "this pack, widen the key's 'packs' in the trust store", "pack_not_allowed", p)
    result = VerificationResult(str(p), pack.id, key.key_id, sig.signer, key.partner, key.country,
                                sig.signed_at, digest, key.expires)
    store.check_version(pack, result, allow_downgrade=allow_downgrade)
    log.info("verified %s: pack %r signed by %r at %s with key %s (%s)", p, pack.id, sig.signer,
             result.to_dict()["signed_at"], key.key_id, key.partner)
    return result, pack


def verify_pack_file(path: str | Path, trust: TrustStore | str | Path | None = None, *,
                     now: dt.datetime | dt.date | None = None,
                     allow_downgrade: bool = False) -> VerificationResult:
    """Verify the detached signature ``<pack>.sig`` of a pack file against the trust store.

    ``trust`` is a :class:`TrustStore` or its folder (default: :func:`default_trust_dir`);
    ``now`` replaces the current time for the expiry check. Raises
    :class:`PackSignatureError` with ``reason`` ``unsigned`` (no .sig), ``malformed`` (.sig
    unreadable), ``untrusted`` (key not in the store), ``tampered`` (bytes or signature
    changed), ``expired`` (key past its expiry), ``pack_not_allowed`` (pack id outside the
    key's prefixes) or ``downgrade`` (a version below the highest one verified before, unless
    ``allow_downgrade``); a pack that verifies but does not parse raises :class:`PackError`.
    A pack that verifies raises the version floor of its pack id in the trust store.
    """
    return _verify(path, trust, now, allow_downgrade)[0]


def unsigned_packs_allowed(allow_unsigned: bool = False) -> bool:
    """``allow_unsigned``, or the development switch ``RISKENGINE_ALLOW_UNSIGNED_PACKS=1``."""
    if allow_unsigned:
        return True
    return os.environ.get(ALLOW_UNSIGNED_ENV, "").strip().lower() in _TRUE


def load_verified_pack(path: str | Path, trust: TrustStore | str | Path | None = None, *,
                       allow_unsigned: bool = False, allow_downgrade: bool = False) -> IndicatorPack:
    """Verify a pack's signature, then parse it (the same bytes).

    A pack shipped with the engine needs no signature. ``allow_unsigned=True`` (or
    ``RISKENGINE_ALLOW_UNSIGNED_PACKS=1``) loads a pack that has *no* ``.sig``, with a warning:
    for local development only. A pack whose ``.sig`` exists and does not verify is refused
    even then: tampering is never allowed. A signed pack below the version floor of its id is
    refused (``downgrade``) unless ``allow_downgrade``.
    """
    if is_builtin_pack(path):
        log.debug("%s ships with the engine: trusted like its code", path)
        return load_pack(path)
    if not signature_path(path).exists() and unsigned_packs_allowed(allow_unsigned):
        pack = load_pack(path)
        switch = "allow_unsigned=True" if allow_unsigned else f"{ALLOW_UNSIGNED_ENV}=1"
        log.warning("UNSIGNED indicator pack loaded WITHOUT verification (%s): %s, pack %r version "
                    "%s, sha256 %s. For local development only: never use unsigned packs in "
                    "production.", switch, path, pack.id, pack.version, pack.sha256)
        return pack
    return _verify(path, trust, None, allow_downgrade)[1]


def load_verified_packs(paths: Iterable[str | Path] | str | Path,
                        trust: TrustStore | str | Path | None = None, *,
                        allow_unsigned: bool = False) -> list[IndicatorPack]:
    """:func:`load_verified_pack` for files and folders (every ``*.yaml`` in a folder)."""
    store = _as_store(trust)
    return [load_verified_pack(f, store, allow_unsigned=allow_unsigned) for f in pack_files(paths)]


# --------------------------------------------------------------------------------------------
# Packs inside a model directory
# --------------------------------------------------------------------------------------------

def pack_file_digests(files: Iterable[str | Path]) -> dict[str, str]:
    """File name → SHA-256 of its bytes, as recorded in a model's feature state."""
    return {Path(f).name: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files}


def load_model_packs(folder: str | Path, recorded: Mapping[str, str] | None) -> list[IndicatorPack]:
    """Load the packs saved in a model directory, checked against the digests recorded at save.

    The packs are part of the model artifact, trusted as the model is; the check catches a pack
    edited after training (the model's features would silently change). ``recorded`` is
    ``None`` for models saved before digests were recorded: they load with a warning.
    """
    d = Path(folder)
    files = sorted(d.glob("*.yaml")) if d.is_dir() else []
    if recorded is None:
        if files:
            log.warning("%s: the model records no SHA-256 for its %d indicator pack(s) (saved "
                        "before pack digests were recorded); loading them without an integrity "
                        "check. Save or train the model again to record them.", d, len(files))
        return [load_pack(f) for f in files]
    names = {f.name for f in files}
    missing, extra = sorted(set(recorded) - names), sorted(names - set(recorded))
    if missing or extra:
        raise PackSignatureError(
            f"the indicator packs in {d} are not the ones saved with the model: missing "
            f"{missing}, unexpected {extra}; restore the model folder from its release (a "
            "model's packs are never edited: train a new model instead)", "model_packs_changed", d)
    packs = []
    for f in files:
        raw = f.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if digest != recorded[f.name]:
            raise PackSignatureError(
                f"tampered: model pack {f} changed after the model was saved (sha256 {digest}, "
                f"recorded {recorded[f.name]}); restore the model folder from its release (a "
                "model's packs are never edited: train a new model instead)", "tampered", f)
        packs.append(parse_pack(raw, source=str(f)))
    return packs
