"""`govpipe keygen`: make a signing key (HMAC secret, or Ed25519 key pair) in files."""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from pipeline.signing.signers import (
    ED25519_ALG,
    MIN_HMAC_KEY_BYTES,
    canonical_alg,
    ed25519_key_id,
    hmac_key_id,
)

EXIT_REFUSED = 1
SECRET_MODE = 0o600
PUBLIC_MODE = 0o644


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keygen = commands.add_parser(
        "keygen", help="make a signing key",
        description="Write a new signing key. hmac: 32 random bytes, base64, at FILE (mode "
                    "0600). ed25519: private key PEM at FILE (mode 0600), public key PEM at "
                    "FILE.pub (give that one to verifiers). Prints the files and the key id, "
                    "never the key.")
    keygen.add_argument("--alg", type=_alg_choice, choices=("hmac", "ed25519"), required=True,
                        help="hmac (HMAC-SHA256, Agent OS compatible) or ed25519, in any "
                             "case")
    keygen.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help="where to write the (private) key")
    keygen.add_argument("--force", action="store_true",
                        help="replace existing files instead of refusing")
    keygen.set_defaults(handler=main)


def _alg_choice(name: str) -> str:
    """keygen's own spelling of an algorithm named in any case (Ed25519, HMAC-SHA256…)."""
    alg = canonical_alg(name)
    if alg is None:
        return name  # argparse then lists the choices
    return "ed25519" if alg == ED25519_ALG else "hmac"


def main(args: argparse.Namespace) -> int:
    out: Path = args.out
    targets = [out] if args.alg == "hmac" else [out, public_path(out)]
    existing = [str(path) for path in targets if path.exists()]
    if existing and not args.force:
        print(f"govpipe: {', '.join(existing)} already exists; not overwriting a key "
              "(use --force to replace it)", file=sys.stderr)
        return EXIT_REFUSED
    try:
        if args.alg == "hmac":
            message = _write_hmac(out, args.force)
        else:
            message = _write_ed25519(out, args.force)
    except FileExistsError as exc:
        print(f"govpipe: {exc.filename} already exists; not overwriting a key "
              "(use --force to replace it)", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as exc:
        print(f"govpipe: cannot write the key to {exc.filename or out}: "
              f"{exc.strerror or type(exc).__name__}", file=sys.stderr)
        return EXIT_REFUSED
    print(message)
    return 0


def public_path(private: Path) -> Path:
    """Where the Ed25519 public key goes: FILE.pub."""
    return private.with_name(private.name + ".pub")


def _write_hmac(out: Path, replace: bool) -> str:
    key = secrets.token_bytes(MIN_HMAC_KEY_BYTES)
    _write_file(out, base64.b64encode(key) + b"\n", SECRET_MODE, replace)
    return f"wrote HMAC-SHA256 key to {out} (mode 0600); key id {hmac_key_id(key)}"


def _write_ed25519(out: Path, replace: bool) -> str:
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    _write_file(out, private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()),
                SECRET_MODE, replace)
    pub = public_path(out)
    _write_file(pub, public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
                PUBLIC_MODE, replace)
    return (f"wrote Ed25519 private key to {out} (mode 0600) and public key to {pub}; "
            f"key id {ed25519_key_id(public)}")


def _write_file(path: Path, data: bytes, mode: int, replace: bool) -> None:
    # A temp file in the same directory, created 0600 by mkstemp, then moved into place:
    # the key is never readable by others, not even for a moment, nor ever half-written.
    # Without replace, link() refuses an existing target atomically (no check-then-write race).
    # Errors name `path`, the file the user asked for, never the temp file.
    try:
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise _about(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        if replace:
            os.replace(temp, path)
        else:
            os.link(temp, path)
    except OSError as exc:
        raise _about(exc, path) from None
    finally:
        Path(temp).unlink(missing_ok=True)


def _about(exc: OSError, path: Path) -> OSError:
    """`exc` (same type, so FileExistsError stays one) naming `path`."""
    return type(exc)(exc.errno, exc.strerror, str(path))
