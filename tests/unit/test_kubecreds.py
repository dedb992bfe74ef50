"""Kubernetes credentials as kubectl finds them: kubeconfig contexts, in-cluster, token files, exec plugins."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.fakeapi import TlsFiles, make_tls

from dnsd.sources import kubecreds
from dnsd.sources.kubecreds import CredentialError, Credentials, ExecPlugin, Target


def kubeconfig(clusters: dict[str, Any], users: dict[str, Any], contexts: dict[str, tuple[str, str]], current: str):  # type: ignore[no-untyped-def]
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": c} for n, c in clusters.items()],
        "users": [{"name": n, "user": u} for n, u in users.items()],
        "contexts": [{"name": n, "context": {"cluster": c, "user": u}} for n, (c, u) in contexts.items()],
        "current-context": current,
    }


TWO = kubeconfig(
    {"prod": {"server": "https://10.0.0.1:6443/"}, "dev": {"server": "http://127.0.0.1:8001"}},
    {"admin": {"token": "prod-token"}, "dev": {"tokenFile": "secrets/token"}},
    {"prod": ("prod", "admin"), "dev": ("dev", "dev")},
    "prod",
)


@dataclass(frozen=True)
class Case:
    id: str
    doc: dict[str, Any]
    context: str | None
    want: dict[str, Any]  # Target fields that must have these values ("{dir}" is the kubeconfig's directory)


CASES = [
    Case("current-context", TWO, None, {"server": "https://10.0.0.1:6443", "token": "prod-token", "token_file": None}),
    Case(
        "named-context",
        TWO,
        "dev",
        {"server": "http://127.0.0.1:8001", "token": None, "token_file": "{dir}/secrets/token"},
    ),
    Case(
        "insecure-and-server-name",
        kubeconfig(
            {"c": {"server": "https://k", "insecure-skip-tls-verify": True, "tls-server-name": "api.internal"}},
            {"u": {"token": "t"}},
            {"x": ("c", "u")},
            "x",
        ),
        None,
        {"insecure": True, "tls_server_name": "api.internal"},
    ),
    Case(
        "client-cert-files-relative",
        kubeconfig(
            {"c": {"server": "https://k", "certificate-authority": "/etc/ca.pem"}},
            {"u": {"client-certificate": "pki/me.crt", "client-key": "pki/me.key"}},
            {"x": ("c", "u")},
            "x",
        ),
        None,
        {"ca_file": "/etc/ca.pem", "cert_file": "{dir}/pki/me.crt", "key_file": "{dir}/pki/me.key", "token": None},
    ),
    Case(
        "exec-plugin",
        kubeconfig(
            {"c": {"server": "https://k"}},
            {
                "u": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1beta1",
                        "command": "aws",
                        "args": ["eks", "get-token"],
                        "env": [{"name": "AWS_PROFILE", "value": "p"}],
                    }
                }
            },
            {"x": ("c", "u")},
            "x",
        ),
        None,
        {
            "exec": ExecPlugin(
                "aws", ("eks", "get-token"), (("AWS_PROFILE", "p"),), "client.authentication.k8s.io/v1beta1", "{dir}"
            )
        },
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_kubeconfig_targets(case: Case, tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(case.doc))
    target = kubecreds.from_kubeconfig(path, case.context)
    for name, value in case.want.items():
        if isinstance(value, str):
            value = value.replace("{dir}", str(tmp_path))
        if isinstance(value, ExecPlugin):
            value = ExecPlugin(value.command, value.args, value.env, value.api_version, str(tmp_path))
        assert getattr(target, name) == value, name


BAD = [
    ("no-such-context", TWO, "staging", "no context named 'staging'"),
    ("no-current-context", {**TWO, "current-context": ""}, None, "no current-context"),
    ("server-not-url", kubeconfig({"c": {"server": "k:6443"}}, {"u": {}}, {"x": ("c", "u")}, "x"), None,
     "is not an http(s) URL"),
    ("exec-old-api", kubeconfig({"c": {"server": "https://k"}},
                                {"u": {"exec": {"apiVersion": "client.authentication.k8s.io/v1alpha1",
                                                "command": "x"}}}, {"x": ("c", "u")}, "x"), None, "not supported"),
    ("not-a-map", ["a"], None, "not a kubeconfig"),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "context", "error"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_kubeconfig_errors_name_the_file(doc: Any, context: str | None, error: str, tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(CredentialError) as info:
        kubecreds.from_kubeconfig(path, context)
    assert str(info.value).startswith(str(path)) and error in str(info.value), str(info.value)


def test_missing_kubeconfig(tmp_path: Path) -> None:
    with pytest.raises(CredentialError, match="cannot read the kubeconfig"):
        kubecreds.from_kubeconfig(tmp_path / "absent")


# ---------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


def test_inline_ca_and_client_certificate_data(tls: TlsFiles, tmp_path: Path) -> None:
    """-data values (base64 PEM) load like the files: the CA is trusted, the client certificate presented."""
    b64 = lambda p: base64.b64encode(p.read_bytes()).decode()  # noqa: E731
    doc = kubeconfig(
        {"c": {"server": "https://127.0.0.1:1", "certificate-authority-data": b64(tls.ca)}},
        {"u": {"client-certificate-data": b64(tls.cert), "client-key-data": b64(tls.key)}},
        {"x": ("c", "u")},
        "x",
    )
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(doc))
    target = kubecreds.from_kubeconfig(path)
    ctx = Credentials(target).ssl_context()
    assert ctx is not None and ctx.verify_mode == ssl.CERT_REQUIRED
    assert len(ctx.get_ca_certs()) == 1
    assert list(tmp_path.iterdir()) == [path]  # the temporary PEM files are gone


def test_client_key_that_does_not_match_is_an_error(tls: TlsFiles, tmp_path: Path) -> None:
    other = make_tls(tmp_path / "other")
    target = Target(server="https://k", cert_file=str(tls.cert), key_file=str(other.key), origin="test")
    with pytest.raises(CredentialError, match="client certificate"):
        Credentials(target).ssl_context()


def test_insecure_skips_verification_and_http_needs_no_tls() -> None:
    ctx = Credentials(Target(server="https://k", insecure=True)).ssl_context()
    assert ctx is not None and ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert Credentials(Target(server="http://127.0.0.1:8001")).ssl_context() is None


# ---------------------------------------------------------------- in-cluster


@pytest.mark.parametrize(
    ("env", "server"),
    [
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, "https://10.96.0.1:443"),
        ({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"}, "https://[fd00::1]:6443"),
    ],
    ids=["ipv4", "ipv6"],
)
def test_in_cluster(env: dict[str, str], server: str, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "ca.crt").write_text("x")
    target = kubecreds.in_cluster(env, tmp_path)
    assert (target.server, target.token_file, target.ca_file) == (
        server,
        str(tmp_path / "token"),
        str(tmp_path / "ca.crt"),
    )


@pytest.mark.parametrize(
    ("env", "files", "error"),
    [
        ({}, ["token"], "KUBERNETES_SERVICE_HOST"),
        ({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, [], "no service-account token"),
    ],
    ids=["not-in-a-pod", "no-token"],
)
def test_in_cluster_errors(env: dict[str, str], files: list[str], error: str, tmp_path: Path) -> None:
    for name in files:
        (tmp_path / name).write_text("t")
    with pytest.raises(CredentialError, match=error):
        kubecreds.in_cluster(env, tmp_path)


# ---------------------------------------------------------------- tokens


def test_token_file_reread_every_minute_and_after_401(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("one\n")
    creds = Credentials(Target(server="https://k", token_file=str(token)))
    clock = [1000.0]
    monkeypatch.setattr(kubecreds.time, "monotonic", lambda: clock[0])

    def bearer() -> str:
        return asyncio.run(creds.headers())["Authorization"]

    assert bearer() == "Bearer one"
    token.write_text("two\n")
    assert bearer() == "Bearer one"  # cached within the minute
    clock[0] += kubecreds.TOKEN_REREAD_S
    assert bearer() == "Bearer two"  # a minute later: read again
    token.write_text("three\n")
    creds.invalidate()  # a 401
    assert bearer() == "Bearer three"
    assert creds.token_reads == 3


def test_empty_token_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n")
    with pytest.raises(CredentialError, match="empty"):
        asyncio.run(Credentials(Target(server="https://k", token_file=str(tmp_path / "token"))).token())


PLUGIN = """
import json, os, sys
runs = sys.argv[1]
open(runs, "a").write("x")
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": os.environ["TOKEN"], "expirationTimestamp": sys.argv[2]}}))
"""


@pytest.mark.parametrize(
    ("expiry", "runs"), [("2099-01-01T00:00:00Z", 1), ("2000-01-01T00:00:00Z", 3)], ids=["cached", "expired"]
)
def test_exec_plugin_cached_until_expiry(expiry: str, runs: int, tmp_path: Path) -> None:
    script = tmp_path / "plugin.py"
    script.write_text(PLUGIN)
    count = tmp_path / "runs"
    plugin = ExecPlugin(sys.executable, (str(script), str(count), expiry), (("TOKEN", "tok"),))
    creds = Credentials(Target(server="https://k", exec=plugin))

    async def three() -> list[str | None]:
        return [await creds.token() for _ in range(3)]

    assert asyncio.run(three()) == ["tok"] * 3
    assert len(count.read_text()) == runs == creds.exec_runs


EXEC_OUTPUTS: list[tuple[str, bytes, Callable[[tuple[str, float]], bool] | str]] = [
    ("token-only", b'{"kind":"ExecCredential","status":{"token":"a"}}', lambda r: r == ("a", 0.0)),
    (
        "expiry",
        b'{"kind":"ExecCredential","status":{"token":"a","expirationTimestamp":"2030-01-01T00:00:00Z"}}',
        lambda r: r == ("a", 1893456000.0),
    ),
    ("not-json", b"Error: login first", "not JSON"),
    ("wrong-kind", json.dumps({"kind": "Status"}).encode(), "not an ExecCredential"),
    ("no-token", b'{"kind":"ExecCredential","status":{"clientCertificateData":"x"}}', "no status.token"),
]


@pytest.mark.parametrize(("out", "want"), [c[1:] for c in EXEC_OUTPUTS], ids=[c[0] for c in EXEC_OUTPUTS])
def test_exec_output(out: bytes, want: Callable[[tuple[str, float]], bool] | str) -> None:
    if isinstance(want, str):
        with pytest.raises(CredentialError, match=want):
            kubecreds.parse_exec_output(out)
    else:
        assert want(kubecreds.parse_exec_output(out))


def test_exec_plugin_failure_names_the_command(tmp_path: Path) -> None:
    plugin = ExecPlugin(sys.executable, ("-c", "import sys; sys.stderr.write('expired session'); sys.exit(3)"))
    with pytest.raises(CredentialError, match=r"exited with status 3: expired session"):
        asyncio.run(kubecreds.run_exec(plugin))
    with pytest.raises(CredentialError, match="cannot run"):
        asyncio.run(kubecreds.run_exec(ExecPlugin(str(tmp_path / "absent"))))
