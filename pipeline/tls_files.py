"""PEM files a TLS client is given (Kafka, OTLP), read and checked before the client is
built: OpenSSL's own errors name neither the file nor the key that set it, and a gRPC
channel would only fail at its first export."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from pipeline.settings import ConfigError

CERTIFICATE_MARKER = b"-----BEGIN CERTIFICATE-----"


def check_tls_files(files: Mapping[str, Path | None], *, password: str | None = None,
                    password_key: str | None = None) -> None:
    """Raise `ConfigError` naming the key for the first file of `files` (dotted key → path;
    a key ending in `key_file` holds a private key, any other certificates) that cannot be
    read or is not of its kind; `password` opens the private key, given by `password_key`."""
    for key, path in files.items():
        if path is None:
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"config error: {key}: cannot read {path}: {exc.strerror}"
                              ) from None
        if key.endswith("key_file"):
            problem = _key_problem(data, password, key, password_key or key)
        elif CERTIFICATE_MARKER not in data:
            problem = (key, f"{path} holds no PEM certificate")
        else:
            problem = None
        if problem is not None:
            raise ConfigError(f"config error: {problem[0]}: {problem[1]}")


def _key_problem(data: bytes, password: str | None, key: str,
                 password_key: str) -> tuple[str, str] | None:
    # The message names the other key the way its own table does (ssl_key_password_file).
    short_key, short_password_key = key.rpartition(".")[2], password_key.rpartition(".")[2]
    try:
        serialization.load_pem_private_key(data, password.encode() if password else None)
    except TypeError:  # encrypted without a password given, or a password for a plain key
        if password is None:
            return key, f"the key is encrypted: give its password in {short_password_key}"
        return password_key, "the key is not encrypted: remove it"
    except (ValueError, UnsupportedAlgorithm) as exc:
        if password is not None and "password" in str(exc).lower():
            return password_key, f"not the password of {short_key}"
        return key, "not a PEM private key OpenSSL can use"
    return None
