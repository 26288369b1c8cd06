"""CURVE keys: who may talk to a backend that listens beyond this machine.

A keys folder holds `server.key` / `server.key_secret` (the backend's pair),
`client.key` / `client.key_secret` (one client's pair) and `authorized_clients/` (the
public keys the backend accepts). Binding anywhere but loopback without keys is refused.
"""

from __future__ import annotations

import ipaddress
import shutil
from pathlib import Path

import zmq.auth

from shared.errors import TesseraError

KEYGEN_HINT = "Generate keys with `tessera4d keys generate KEYS_DIR`, then start with `--curve-keys KEYS_DIR`."


def is_loopback(bind: str) -> bool:
    """True for ipc://, inproc:// and tcp:// on 127.0.0.0/8, ::1 or localhost."""
    transport, _, rest = bind.partition("://")
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp" or not rest:
        return False
    host = rest.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # '*', an interface name or a host name: assume it reaches the network
        return False


def check_bind_allowed(bind: str, curve_keys: Path | None) -> None:
    """Refuse to listen beyond this machine without CURVE authentication."""
    if curve_keys is None and not is_loopback(bind):
        raise TesseraError(
            f"Refusing to listen on {bind} without authentication: anyone who can reach it could run jobs. "
            f"{KEYGEN_HINT} Or bind to tcp://127.0.0.1:PORT for local use."
        )


def load_server_keys(keys_dir: Path) -> tuple[bytes, bytes, Path]:
    """(public key, secret key, authorized_clients folder) from a keys folder."""
    keys_dir = Path(keys_dir)
    secret_file = keys_dir / "server.key_secret"
    authorized = keys_dir / "authorized_clients"
    if not secret_file.is_file():
        raise TesseraError(f"No server secret key at {secret_file}. {KEYGEN_HINT}")
    if not authorized.is_dir():
        raise TesseraError(f"No folder of authorised client keys at {authorized}. {KEYGEN_HINT}")
    public, secret = zmq.auth.load_certificate(secret_file)
    if not secret:
        raise TesseraError(f"{secret_file} holds no secret key. {KEYGEN_HINT}")
    return public, secret, authorized


def generate_keys(keys_dir: Path) -> dict[str, Path]:
    """Write a server pair and one client pair, and authorise the client. Returns the files by role."""
    keys_dir = Path(keys_dir)
    keys_dir.mkdir(parents=True, exist_ok=True)
    for name in ("server", "client"):
        if (keys_dir / f"{name}.key_secret").exists():
            raise TesseraError(f"{keys_dir / (name + '.key_secret')} already exists; use an empty folder.")
    server_public, server_secret = zmq.auth.create_certificates(keys_dir, "server")
    client_public, client_secret = zmq.auth.create_certificates(keys_dir, "client")
    authorized = keys_dir / "authorized_clients"
    authorized.mkdir(exist_ok=True)
    shutil.copy(client_public, authorized / "client.key")
    return {
        "server_public": Path(server_public),
        "server_secret": Path(server_secret),
        "client_public": Path(client_public),
        "client_secret": Path(client_secret),
        "authorized": authorized,
    }


def load_client_keys(keys_dir: Path) -> tuple[bytes, bytes, bytes]:
    """(server public, client public, client secret) for a client, from a folder with
    server.key, client.key and client.key_secret."""
    keys_dir = Path(keys_dir)
    server_public, _ = zmq.auth.load_certificate(keys_dir / "server.key")
    client_public, client_secret = zmq.auth.load_certificate(keys_dir / "client.key_secret")
    if not client_secret:
        raise TesseraError(f"{keys_dir / 'client.key_secret'} holds no secret key.")
    return server_public, client_public, client_secret
