"""ADB authentication for the device agent: adbd's ``adb_keys`` check.

A device with keys answers a client's ``CNXN`` with ``AUTH TOKEN <20 random bytes>``; the
client signs the token with its RSA key (PKCS#1 v1.5 over the token as a SHA-1 digest) and
sends ``AUTH SIGNATURE``; a signature by one of the authorised keys gets the ``CNXN``,
another gets a fresh token. A client out of keys sends its public key (``AUTH
RSAPUBLICKEY``), which a phone would show its user; the agent has no user and closes the
connection. Keys are lines of Android's public key format (what adb-shell's ``keygen``
writes to ``<key>.pub``): base64 of ``{u32 words, u32 n0inv, u8 n[256] little-endian,
u8 rr[256], u32 e}``, then a name.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import struct
from dataclasses import dataclass, field
from pathlib import Path

TOKEN_SIZE = 20
ANDROID_PUBKEY = struct.Struct("<II256s256sI")
SHA1_DIGEST_INFO = bytes.fromhex("3021300906052b0e03021a05000414")
"""DER prefix of a SHA-1 DigestInfo (PKCS#1 v1.5 signatures)."""


@dataclass(frozen=True)
class PublicKey:
    """An RSA public key."""

    modulus: int
    exponent: int

    @classmethod
    def parse(cls, line: str) -> PublicKey:
        """A key from a line of an ``adb_keys`` file.

        Raises:
            ValueError: Not a key in Android's format.
        """
        try:
            raw = base64.b64decode(line.split()[0], validate=True)
            words, _n0inv, modulus, _rr, exponent = ANDROID_PUBKEY.unpack(raw)
        except (IndexError, binascii.Error, struct.error) as error:
            raise ValueError(f"not an Android RSA public key: {error}") from error
        if words != 64:
            raise ValueError(f"unsupported key size: {words * 32} bits")
        return cls(int.from_bytes(modulus, "little"), exponent)

    def signed(self, signature: bytes, digest: bytes) -> bool:
        """Whether ``signature`` is this key's PKCS#1 v1.5 signature of a SHA-1 ``digest``."""
        size = (self.modulus.bit_length() + 7) // 8
        value = int.from_bytes(signature, "big")
        if len(signature) != size or value >= self.modulus:
            return False
        encoded = pow(value, self.exponent, self.modulus).to_bytes(size, "big")
        body = SHA1_DIGEST_INFO + digest
        expected = b"\x00\x01" + b"\xff" * (size - len(body) - 3) + b"\x00" + body
        return hmac.compare_digest(encoded, expected)


@dataclass
class AdbKeys:
    """The authorised keys of one device, and the token of the connection being checked.

    One object per connection (it remembers that connection's last token).
    """

    keys: tuple[PublicKey, ...]
    _token: bytes = field(default=b"", repr=False)

    @classmethod
    def load(cls, path: Path) -> AdbKeys:
        """Read an ``adb_keys`` file (one key per line; blank lines and ``#`` skipped)."""
        lines = Path(path).read_text().splitlines()
        keys = [PublicKey.parse(line) for line in lines if line.strip() and line[0] != "#"]
        return cls(tuple(keys))

    def fresh(self) -> AdbKeys:
        """The same keys, for another connection."""
        return AdbKeys(self.keys)

    def new_token(self) -> bytes:
        """A fresh random token for the client to sign."""
        self._token = secrets.token_bytes(TOKEN_SIZE)
        return self._token

    def verify(self, signature: bytes) -> bool:
        """Whether ``signature`` signs the last token with one of the keys."""
        if not self._token:
            return False
        return any(key.signed(signature, self._token) for key in self.keys)
