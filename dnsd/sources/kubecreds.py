"""Kubernetes API credentials as kubectl finds them: in-cluster service account, or a kubeconfig context.

What is read (client-go's clientcmd and rest.InClusterConfig): from a kubeconfig, the current context (or a named
one), its cluster's `server`, `certificate-authority(-data)`, `insecure-skip-tls-verify` and `tls-server-name`,
its user's `token`, `tokenFile`, `client-certificate(-data)`/`client-key(-data)` and `exec` credential plugins
(client.authentication.k8s.io ExecCredential: the command is run with its args and env, status.token is cached
until status.expirationTimestamp). In a pod: the service-account token (re-read at least every TOKEN_REREAD_S and
after a 401, because the kubelet rotates projected tokens), its CA bundle and KUBERNETES_SERVICE_HOST/PORT.
Relative paths in a kubeconfig are relative to the kubeconfig's directory, as kubectl resolves them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import os
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dnsd.errors import DnsdError

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_S = 60.0  # client-go re-reads a token file once a minute (transport/token_source.go)
EXEC_TIMEOUT_S = 30.0  # an exec plugin that takes longer is killed and the request fails (then retried)
EXEC_MAX_OUTPUT = 1 << 20  # ExecCredential output read at most
EXEC_API_VERSIONS = (
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
)


class CredentialError(DnsdError):
    """The credentials cannot be found or used (the message names the file and the reason)."""


@dataclass(frozen=True, slots=True)
class ExecPlugin:
    """users[].user.exec of a kubeconfig."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    api_version: str = "client.authentication.k8s.io/v1"
    cwd: str | None = None  # relative commands are run from the kubeconfig's directory


@dataclass(frozen=True, slots=True)
class Target:
    """Where the API is and how to prove who we are: everything a request needs."""

    server: str  # https://host:port (or http:// for a local fake), no trailing slash
    ca_file: str | None = None
    ca_data: str | None = None  # PEM text
    insecure: bool = False
    tls_server_name: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = None  # PEM
    key_data: bytes | None = None  # PEM
    token: str | None = None
    token_file: str | None = None
    exec: ExecPlugin | None = None
    origin: str = ""  # "in-cluster" or "kubeconfig PATH context NAME", for messages


class Credentials:
    """A Target plus the state of its tokens: the token file's last read, the exec plugin's cached token."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._file_token: str | None = None
        self._file_read_at = 0.0
        self._exec_token: str | None = None
        self._exec_expires = 0.0  # Unix time; 0: does not expire (until a 401)
        self._exec_lock = asyncio.Lock()
        self.exec_runs = 0  # how often the plugin ran (tests, metrics)
        self.token_reads = 0  # how often the token file was read

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for an https server (None for http://): the CA (or the system's), the client
        certificate when there is one, no verification with insecure-skip-tls-verify."""
        t = self.target
        if not t.server.startswith("https://"):
            return None
        ctx = ssl.create_default_context(cafile=t.ca_file, cadata=t.ca_data)
        if t.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if t.cert_file or t.cert_data:
            _load_chain(ctx, t)
        return ctx

    def server_hostname(self) -> str | None:
        return self.target.tls_server_name

    async def headers(self) -> dict[str, str]:
        """The Authorization header for the next request (empty without a token)."""
        token = await self.token()
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def token(self) -> str | None:
        t = self.target
        if t.exec is not None:
            return await self._exec()
        if t.token_file:
            now = time.monotonic()
            if self._file_token is None or now - self._file_read_at >= TOKEN_REREAD_S:
                self._file_token = _read_token(Path(t.token_file))
                self._file_read_at = now
                self.token_reads += 1
            return self._file_token
        return t.token

    def invalidate(self) -> None:
        """After a 401: the token file is read again and the exec plugin run again for the next request."""
        self._file_token = None
        self._exec_token = None

    async def _exec(self) -> str:
        async with self._exec_lock:  # one plugin run at a time; the others wait for its token
            if self._exec_token is not None and (not self._exec_expires or time.time() < self._exec_expires):
                return self._exec_token
            assert self.target.exec is not None
            token, expires = await run_exec(self.target.exec)
            self.exec_runs += 1
            self._exec_token, self._exec_expires = token, expires
            return token


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(f"{path}: cannot read the token: {exc}") from None
    if not token:
        raise CredentialError(f"{path}: the token file is empty")
    return token


def _load_chain(ctx: ssl.SSLContext, t: Target) -> None:
    """Load the client certificate and key; -data values go through a private temporary file (ssl reads files
    only) that is removed at once."""
    if t.cert_file and t.key_file:
        try:
            ctx.load_cert_chain(t.cert_file, t.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise CredentialError(f"{t.origin}: client certificate {t.cert_file}: {exc}") from None
        return
    cert = t.cert_data if t.cert_data is not None else _read_bytes(t.cert_file, t.origin)
    key = t.key_data if t.key_data is not None else _read_bytes(t.key_file, t.origin)
    with tempfile.TemporaryDirectory(prefix="dnsd-kube-") as d:
        c, k = Path(d) / "cert.pem", Path(d) / "key.pem"
        for path, data in ((c, cert), (k, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        try:
            ctx.load_cert_chain(str(c), str(k))
        except (OSError, ssl.SSLError) as exc:
            raise CredentialError(f"{t.origin}: client certificate: {exc}") from None


def _read_bytes(path: str | None, origin: str) -> bytes:
    if not path:
        raise CredentialError(f"{origin}: a client certificate needs both a certificate and a key")
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CredentialError(f"{origin}: {path}: {exc.strerror or exc}") from None


# ---------------------------------------------------------------- exec credential plugins


def _parse_time(text: str) -> float:
    """RFC 3339 (as Kubernetes writes it: 2026-12-02T01:00:00Z) to Unix time."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def run_exec(plugin: ExecPlugin) -> tuple[str, float]:
    """Run an exec credential plugin; return (token, expiry as Unix time or 0 for none). KUBERNETES_EXEC_INFO
    tells the plugin the API version and that it is not interactive (no prompts: stdin is closed)."""
    env = dict(os.environ)
    env.update(dict(plugin.env))
    info = {"apiVersion": plugin.api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    env["KUBERNETES_EXEC_INFO"] = json.dumps(info)
    what = f"exec plugin {plugin.command!r}"
    try:
        proc = await asyncio.create_subprocess_exec(
            plugin.command,
            *plugin.args,
            env=env,
            cwd=plugin.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise CredentialError(f"{what}: cannot run: {exc.strerror or exc}") from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), EXEC_TIMEOUT_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise CredentialError(f"{what}: no answer within {EXEC_TIMEOUT_S:.0f} s") from None
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    if proc.returncode != 0:
        tail = err[-500:].decode(errors="replace").strip()
        raise CredentialError(f"{what}: exited with status {proc.returncode}: {tail}")
    return parse_exec_output(out[:EXEC_MAX_OUTPUT], what)


def parse_exec_output(out: bytes, what: str = "exec plugin") -> tuple[str, float]:
    """The token and expiry of an ExecCredential document."""
    try:
        doc = json.loads(out)
    except ValueError as exc:
        raise CredentialError(f"{what}: output is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "ExecCredential":
        raise CredentialError(f"{what}: output is not an ExecCredential")
    status = doc.get("status")
    token = status.get("token") if isinstance(status, dict) else None
    if not isinstance(token, str) or not token:
        raise CredentialError(f"{what}: ExecCredential has no status.token (client certificates are not supported)")
    expiry = status.get("expirationTimestamp") if isinstance(status, dict) else None
    if expiry is None:
        return token, 0.0
    try:
        return token, _parse_time(str(expiry))
    except ValueError:
        raise CredentialError(f"{what}: bad status.expirationTimestamp {expiry!r}") from None


# ---------------------------------------------------------------- finding the target


def in_cluster(env: Mapping[str, str] | None = None, root: Path | None = None) -> Target:
    """rest.InClusterConfig: https://KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT, the mounted token (a file,
    re-read) and CA (root: the service-account directory, SERVICE_ACCOUNT unless given)."""
    env = os.environ if env is None else env
    root = SERVICE_ACCOUNT if root is None else root
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise CredentialError(
            "in_cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not in a pod?)"
        )
    token = root / "token"
    if not token.is_file():
        raise CredentialError(f"in_cluster: {token}: no service-account token (automountServiceAccountToken off?)")
    host = f"[{host}]" if ":" in host else host  # an IPv6 service address
    ca = root / "ca.crt"
    return Target(
        server=f"https://{host}:{port}",
        ca_file=str(ca) if ca.is_file() else None,
        token_file=str(token),
        origin="in-cluster",
    )


def _named(doc: Mapping[str, Any], section: str, name: str, path: Path) -> Mapping[str, Any]:
    items = doc.get(section) or []
    if not isinstance(items, list):
        raise CredentialError(f"{path}: {section} is not a list")
    for item in items:
        if isinstance(item, Mapping) and item.get("name") == name:
            inner = item.get(section.rstrip("s") if section != "users" else "user")
            if not isinstance(inner, Mapping):
                raise CredentialError(f"{path}: {section} entry {name!r} has no {section.rstrip('s')} map")
            return inner
    raise CredentialError(f"{path}: no {section.rstrip('s')} named {name!r}")


def _b64(value: Any, what: str, path: Path) -> bytes:
    try:
        return base64.b64decode(str(value), validate=False)
    except ValueError:
        raise CredentialError(f"{path}: {what} is not base64") from None


def from_kubeconfig(path: Path, context: str | None = None) -> Target:
    """The target of a kubeconfig's current context (or the context named)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CredentialError(f"{path}: cannot read the kubeconfig: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CredentialError(f"{path}: not a kubeconfig: {exc}") from None
    if not isinstance(doc, Mapping):
        raise CredentialError(f"{path}: not a kubeconfig (not a map)")
    name = context or doc.get("current-context")
    if not name:
        raise CredentialError(f"{path}: no current-context, and no context named in the config")
    ctx = _named(doc, "contexts", str(name), path)
    cluster = _named(doc, "clusters", str(ctx.get("cluster")), path)
    user: Mapping[str, Any] = _named(doc, "users", str(ctx["user"]), path) if ctx.get("user") else {}
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise CredentialError(f"{path}: context {name!r}: cluster server {server!r} is not an http(s) URL")
    base = path.parent

    def rel(value: Any) -> str | None:
        if value in (None, ""):
            return None
        p = Path(os.path.expanduser(str(value)))
        return str(p if p.is_absolute() else base / p)

    ca_data = cluster.get("certificate-authority-data")
    exec_cfg = user.get("exec")
    plugin: ExecPlugin | None = None
    if exec_cfg is not None:
        if not isinstance(exec_cfg, Mapping) or not exec_cfg.get("command"):
            raise CredentialError(f"{path}: user of context {name!r}: exec needs a command")
        api = str(exec_cfg.get("apiVersion") or EXEC_API_VERSIONS[0])
        if api not in EXEC_API_VERSIONS:
            raise CredentialError(f"{path}: exec apiVersion {api!r} is not supported (use {EXEC_API_VERSIONS[0]})")
        command = str(exec_cfg["command"])
        if os.sep in command and not os.path.isabs(command):
            command = str(base / command)  # kubectl: a relative path with a slash is relative to the kubeconfig
        env_items = exec_cfg.get("env") or []
        plugin = ExecPlugin(
            command=command,
            args=tuple(str(a) for a in exec_cfg.get("args") or ()),
            env=tuple((str(e["name"]), str(e.get("value", ""))) for e in env_items if isinstance(e, Mapping)),
            api_version=api,
            cwd=str(base),
        )
    return Target(
        server=server.rstrip("/"),
        ca_file=rel(cluster.get("certificate-authority")),
        ca_data=_b64(ca_data, "certificate-authority-data", path).decode() if ca_data else None,
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        tls_server_name=cluster.get("tls-server-name") or None,
        cert_file=rel(user.get("client-certificate")),
        key_file=rel(user.get("client-key")),
        cert_data=_b64(user["client-certificate-data"], "client-certificate-data", path)
        if user.get("client-certificate-data")
        else None,
        key_data=_b64(user["client-key-data"], "client-key-data", path) if user.get("client-key-data") else None,
        token=str(user["token"]) if user.get("token") else None,
        token_file=rel(user.get("tokenFile")),
        exec=plugin,
        origin=f"kubeconfig {path} context {name}",
    )
