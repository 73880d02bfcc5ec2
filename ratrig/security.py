"""CurveZMQ authentication and encryption between the hosts of one rig.

Off by default: endpoints bind to 127.0.0.1 and need no key. When `[network]` names keys, every
socket of the session is a CurveZMQ socket:

- every PUB (and the session directory) is a CURVE server with the rig's *server* key pair; pyzmq's
  own ZAP handler (`zmq.auth.ThreadAuthenticator`) lets in only the client public keys the config
  lists (`network.allowed_client_keys`);
- every SUB is a CURVE client with this host's *client* key pair, and checks the server's public key.

A peer without a key, or with a key not on the list, completes no handshake: it receives nothing,
and since every subscriber is a client that checks the server key, nothing it binds is read either.

Key files are pyzmq/czmq certificates: `NAME.key` (public, share it) and `NAME.key_secret` (public +
secret, mode 0600, never share it), made by `ratrig keys` (`zmq.curve_keypair`).

The stages learn the keys from the composition root through one environment variable
(`RATRIG_CURVE`, JSON of file paths, set by `ratrig run` / `ratrig demo` from the config), so the
sockets are secured where they are made (`ratrig.transport.make_pub` / `make_sub`) without every
stage passing keys around. One authenticator runs per ZeroMQ context while it has CURVE server
sockets; it stops when the last of them closes (so `Context.term()` does not wait on it).
"""
from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

CURVE_ENV = "RATRIG_CURVE"
ZAP_DOMAIN = "ratrig"


class KeyFileError(OSError):
    """A key file that is missing, unreadable, malformed or too open; the message names it.

    An OSError so that the stages' existing "cannot bind / connect" handling reports it and exits."""


@dataclass(frozen=True)
class CurveKeys:
    """The CurveZMQ keys one host uses (z85-encoded bytes).

    `server_secret` is None on a host that only connects (e.g. a viewer on a laptop).
    """

    server_public: bytes
    server_secret: bytes | None
    client_public: bytes
    client_secret: bytes
    allowed_clients: frozenset[bytes]


def write_key_pair(folder: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Make a CurveZMQ key pair: FOLDER/NAME.key (public) and FOLDER/NAME.key_secret (mode 0600).

    Refuses to overwrite an existing key (a replaced key locks out every host that trusts the old one).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    public_path, secret_path = folder / f"{name}.key", folder / f"{name}.key_secret"
    for p in (public_path, secret_path):
        if p.exists():
            raise KeyFileError(f"{p}: already exists; remove it first if you mean to replace this key")
    public, secret = zmq.curve_keypair()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    body = lambda kind, lines: (f"#   ****  Generated on {stamp} by ratrig keys  ****\n"  # noqa: E731
                                f"#   ZeroMQ CURVE {kind} Certificate\n#   {lines}\n\nmetadata\ncurve\n")
    pub_text = body("Public", "Share this file with the hosts that must accept this key.") + \
        f'    public-key = "{public.decode()}"\n'
    sec_text = body("**Secret**", "DO NOT share this file or loosen its permissions.") + \
        f'    public-key = "{public.decode()}"\n    secret-key = "{secret.decode()}"\n'
    _write_new(secret_path, sec_text, 0o600)
    _write_new(public_path, pub_text, 0o644)
    return public_path, secret_path


def _write_new(path: Path, text: str, mode: int) -> None:
    """Write a new file created with `mode` from the start (no window with looser permissions)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed it further; make it exact
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_public(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise KeyFileError(f"{what}: {path}: not a readable CurveZMQ key file ({e}); make one with `ratrig keys`") from None
    return public


def load_secret(path: str | os.PathLike[str], what: str) -> tuple[bytes, bytes]:
    """(public, secret) from a `.key_secret` file; it must not be readable by group or others."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise KeyFileError(f"{what}: {path}: not a readable CurveZMQ key file ({e}); make one with `ratrig keys`") from None
    if secret is None:
        raise KeyFileError(f"{what}: {path} holds only a public key; expected the .key_secret file")
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{what}: {path} is readable by others (mode {stat.filemode(mode)}); "
                           f"run `chmod 600 {path}`")
    return public, secret


def curve_env(server_secret: str = "", server_public: str = "", client_secret: str = "",
              allowed_clients: Iterable[str] = ()) -> dict[str, str]:
    """The environment that tells the stage processes which key files to use ({} when none)."""
    spec = {"server_secret": server_secret, "server_public": server_public, "client_secret": client_secret,
            "allowed_clients": list(allowed_clients)}
    if not any(spec.values()):
        return {}
    return {CURVE_ENV: json.dumps(spec)}


def keys_from_spec(spec: Mapping[str, object]) -> CurveKeys:
    """Load the key files named by a curve_env spec. Raises KeyFileError naming the file."""
    server_secret_path = str(spec.get("server_secret") or "")
    server_public_path = str(spec.get("server_public") or "")
    client_secret_path = str(spec.get("client_secret") or "")
    allowed = [str(p) for p in spec.get("allowed_clients") or []]  # type: ignore[union-attr]
    server_public = server_secret = None
    if server_secret_path:
        server_public, server_secret = load_secret(server_secret_path, "network.server_secret_key")
    if server_public_path:
        declared = load_public(server_public_path, "network.server_public_key")
        if server_public is not None and declared != server_public:
            raise KeyFileError(f"network.server_public_key: {server_public_path} is not the public half of "
                               f"{server_secret_path}")
        server_public = declared
    if server_public is None:
        raise KeyFileError("network: CurveZMQ keys are configured but neither server_secret_key nor "
                           "server_public_key is set (clients must know the server's public key)")
    if not client_secret_path:
        raise KeyFileError("network.client_secret_key: expected this host's client .key_secret file "
                           "(make one with `ratrig keys`)")
    client_public, client_secret = load_secret(client_secret_path, "network.client_secret_key")
    allowed_keys = frozenset(load_public(p, "network.allowed_client_keys") for p in allowed)
    if server_secret is not None and not allowed_keys:
        raise KeyFileError("network.allowed_client_keys: a host that binds needs the list of client public "
                           "keys it lets in (at least its own client key)")
    return CurveKeys(server_public, server_secret, client_public, client_secret, allowed_keys)


def keys_from_env(environ: Mapping[str, str] | None = None) -> CurveKeys | None:
    """The keys named by $RATRIG_CURVE, or None when it is unset (no authentication)."""
    raw = (os.environ if environ is None else environ).get(CURVE_ENV, "")
    if not raw:
        return None
    try:
        spec = json.loads(raw)
    except ValueError as e:
        raise KeyFileError(f"${CURVE_ENV}: not valid JSON ({e})") from None
    if not isinstance(spec, dict):
        raise KeyFileError(f"${CURVE_ENV}: expected a JSON object of key file paths")
    return keys_from_spec(spec)


class _AllowList:
    """ZAP credentials provider: a client is let in when its public key is on the list."""

    def __init__(self, allowed: frozenset[bytes]) -> None:
        self.allowed = allowed
        self.refused = 0

    def callback(self, domain: str, key: bytes) -> bool:
        ok = key in self.allowed
        if not ok:
            self.refused += 1
        return ok


class _Authenticators:
    """One ThreadAuthenticator per context while it has CURVE server sockets (reference counted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_ctx: dict[int, tuple[ThreadAuthenticator, int]] = {}

    def acquire(self, ctx: zmq.Context, allowed: frozenset[bytes]) -> None:
        with self._lock:
            entry = self._by_ctx.get(id(ctx))
            if entry is None:
                auth = ThreadAuthenticator(ctx)
                auth.start()
                auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=_AllowList(allowed))
                entry = (auth, 0)
            self._by_ctx[id(ctx)] = (entry[0], entry[1] + 1)

    def release(self, ctx: zmq.Context) -> None:
        with self._lock:
            entry = self._by_ctx.get(id(ctx))
            if entry is None:
                return
            auth, n = entry
            if n <= 1:
                del self._by_ctx[id(ctx)]
                auth.stop()
            else:
                self._by_ctx[id(ctx)] = (auth, n - 1)


# The one piece of process state here: ZeroMQ allows one ZAP handler per context, and the sockets
# that need it are made in many places. Reference counts keep its life exactly that of its sockets.
_AUTHENTICATORS = _Authenticators()


class ServerSocket(zmq.Socket):
    """A socket whose close() also releases its context's authenticator."""

    _ratrig_ctx: zmq.Context | None = None

    def close(self, linger: int | None = None) -> None:
        ctx, self._ratrig_ctx = self._ratrig_ctx, None
        super().close(linger)
        if ctx is not None:
            _AUTHENTICATORS.release(ctx)


def server_socket(ctx: zmq.Context, kind: int, keys: CurveKeys | None) -> zmq.Socket:
    """A socket that will bind: a CURVE server letting in `keys.allowed_clients` (plain when keys is None)."""
    if keys is None:
        return ctx.socket(kind)
    if keys.server_secret is None:
        raise KeyFileError("network.server_secret_key: this host binds sockets, so it needs the rig's server "
                           ".key_secret file")
    _AUTHENTICATORS.acquire(ctx, keys.allowed_clients)
    sock = ctx.socket(kind, socket_class=ServerSocket)
    sock._ratrig_ctx = ctx
    sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
    sock.curve_secretkey = keys.server_secret
    sock.curve_publickey = keys.server_public
    sock.curve_server = True
    return sock


def client_socket(ctx: zmq.Context, kind: int, keys: CurveKeys | None) -> zmq.Socket:
    """A socket that will connect: a CURVE client that checks the server key (plain when keys is None)."""
    sock = ctx.socket(kind)
    if keys is not None:
        sock.curve_secretkey = keys.client_secret
        sock.curve_publickey = keys.client_public
        sock.curve_serverkey = keys.server_public
    return sock
