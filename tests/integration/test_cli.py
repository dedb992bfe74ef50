"""The command line (issue 2 section 5) and an end-to-end set through real clients (dig, kdig, nslookup).

Everything here runs the real process (`python -m dnsd ...`). The DNS answers expected from the process serving
tests/data/store/e2e are written from the Kubernetes DNS spec 1.1.0 as CoreDNS answers it: ClusterIP A
(2.3.1), headless A per ready endpoint and endpoint names (2.4.1), SRV priority 0 weight floor(100/N) (2.3.2),
PTR for a ClusterIP (2.3.3), NXDOMAIN with the apex SOA in authority (RFC 2308), TTL 5, AA on authoritative
answers, REFUSED outside the served zones.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import pytest
import yaml
from support import (
    REPO,
    DnsdProcess,
    config_expectations,
    query,
    rcode_text,
    rr_lines,
    start_dnsd_process,
    wait_until,
    zone_lines,
)

CONFIGS = REPO / "tests" / "data" / "configs"
GOOD = sorted((CONFIGS / "good").glob("*.yaml"))
BAD = sorted((CONFIGS / "bad").glob("*.yaml"))
REFUSED = sorted((CONFIGS / "refused").glob("*.yaml"))  # valid config that `run` and `check-config` refuse
SHIPPED = sorted((REPO / "config").glob("*.yaml"))
E2E = REPO / "tests" / "data" / "store" / "e2e"
E2E_REL = "tests/data/store/e2e"

WEB_A = "web.default.svc.cluster.local. 5 IN A 10.96.0.20"


# Root reads any file whatever its mode (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH): as root, a process that must meet
# file permissions runs without those two capabilities (setpriv from util-linux drops them from its bounding set).
AS_UNPRIVILEGED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else []


def dnsd(*args: str, timeout: float = 30.0, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "dnsd", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(out: subprocess.CompletedProcess[str], prefix: str = "dnsd: ") -> str:
    """Exit 1, nothing on stdout, one line on stderr starting with `prefix`; no traceback."""
    assert out.returncode == 1, out
    assert "Traceback" not in out.stderr and "Error:" not in out.stderr, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix), out.stderr
    assert out.stdout == "", out.stdout
    return lines[0]


def assert_names_problem(path: Path, output: str) -> None:
    subs, regexes = config_expectations(path)
    assert subs or regexes, f"{path.name} has no '# expect:' line"
    for sub in subs:
        assert sub in output, f"{sub!r} not in the output: {output!r}"
    for rx in regexes:
        assert re.search(rx, output), f"{rx!r} does not match the output: {output!r}"


# ---------------------------------------------------------------- version and check-config


def test_version() -> None:
    out = dnsd("--version")
    assert out.returncode == 0, out
    assert re.search(r"\bdnsd\b.*\b\d+\.\d+(\.\d+)?\b", out.stdout + out.stderr), out


@pytest.mark.parametrize("path", GOOD + SHIPPED, ids=[f"{p.parent.name}/{p.name}" for p in GOOD + SHIPPED])
def test_check_config_good(path: Path) -> None:
    out = dnsd("check-config", str(path))
    assert out.returncode == 0, out.stdout + out.stderr


def test_shipped_default_config_exists() -> None:
    assert (REPO / "config" / "dnsd.yaml") in SHIPPED


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_check_config_bad(path: Path) -> None:
    out = dnsd("check-config", str(path))
    assert out.returncode != 0, out
    assert_names_problem(path, out.stdout + out.stderr)


def test_check_config_prints_every_reason(tmp_path: Path) -> None:
    """Several bad keys: one `dnsd: FILE: key: ...` line for each, exit 1 (a reload logs the same lines)."""
    path = tmp_path / "two.yaml"
    path.write_text("workers: 0\ncluster: {pods: sometimes}\n")
    out = dnsd("check-config", str(path))
    assert out.returncode == 1, out
    assert out.stderr.splitlines() == [
        f"dnsd: {path}: workers: must be between 1 and 64: 0",
        f"dnsd: {path}: cluster.pods: must be one of disabled | insecure | verified: 'sometimes'",
    ], out.stderr


def test_check_config_missing_file(tmp_path: Path) -> None:
    out = dnsd("check-config", str(tmp_path / "absent.yaml"))
    assert out.returncode != 0
    assert "absent.yaml" in out.stdout + out.stderr


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_start_with_bad_config_exits_nonzero(path: Path) -> None:
    out = dnsd("--config", str(path), timeout=20)
    assert out.returncode != 0, out
    assert_names_problem(path, out.stdout + out.stderr)


@pytest.mark.parametrize("mode", ["check-config", "--config"])
@pytest.mark.parametrize("path", REFUSED, ids=[p.name for p in REFUSED])
def test_refused_config_is_reported_by_check_config_and_refused_at_start(path: Path, mode: str) -> None:
    """What `run` refuses before listening (a source not built yet, a files source that is a file),
    check-config reports too."""
    out = dnsd(mode, str(path), timeout=20)
    line = assert_one_line_error(out)
    assert_names_problem(path, line)
    if mode == "check-config":
        assert line.startswith(f"dnsd: {path}: "), line


# ---------------------------------------------------------------- files that are not a config (issue 5 section 3)


@dataclass(frozen=True)
class FileCase:
    id: str
    make: Callable[[Path], Path]  # builds the file under a temporary directory, returns the path to pass
    error: str  # regex the message must match after "dnsd: PATH"


def _write(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(d: Path) -> Path:
        (d / name).write_bytes(content)
        return d / name

    return make


def _symlink_loop(d: Path) -> Path:
    (d / "loop.yaml").symlink_to(d / "loop.yaml")
    return d / "loop.yaml"


FILE_CASES = [
    FileCase("directory", lambda d: d, r": is a directory, not a config file$"),
    FileCase("dev-zero", lambda d: Path("/dev/zero"), r": larger than 1 MiB; not a dnsd config$"),
    FileCase("missing", lambda d: d / "absent.yaml", r": cannot read: No such file or directory$"),
    FileCase("symlink-loop", _symlink_loop, r": cannot read: Too many levels of symbolic links$"),
    FileCase("huge", _write("huge.yaml", b"# padding\n" * 300_000), r": larger than 1 MiB; not a dnsd config$"),
    FileCase("latin-1", _write("latin1.yaml", b"listen: ['127.0.0.1:0']\n# caf\xe9\n"), r":2: not UTF-8 text"),
    FileCase("binary", _write("dnsd.bin", bytes(range(256)) * 4), r":2: not UTF-8 text"),
    FileCase("nul", _write("nul.yaml", b"listen: ['127.0.0.1:0']\x00\n"), r":1: not valid YAML: control character"),
    FileCase("top-level-list", _write("list.yaml", b"- listen\n- http\n"), r": the top level must be a mapping"),
    FileCase("top-level-number", _write("n.yaml", b"42\n"), r": the top level must be a mapping"),
    FileCase(
        "duplicate-key",
        _write("dup.yaml", b"http: null\nlisten: ['127.0.0.1:0']\nhttp: '127.0.0.1:0'\n"),
        r":3: http: duplicate key \(first on line 1\)",
    ),
    FileCase(
        "alias-bomb",
        lambda d: CONFIGS / "bad" / "alias-bomb.yaml",
        r":\d+: .*: more than 100000 YAML values once aliases are expanded",
    ),
    FileCase(
        "deep-nesting",
        _write("deep.yaml", b"listen: " + b"[" * 100_000 + b"\n"),
        r":1: not valid YAML: nested more than 32 levels deep$",
    ),
]


@pytest.mark.parametrize("mode", ["check-config", "--config"])
@pytest.mark.parametrize("case", FILE_CASES, ids=[c.id for c in FILE_CASES])
def test_not_a_config_file(tmp_path: Path, case: FileCase, mode: str) -> None:
    """One line `dnsd: FILE: ...`, exit 1; never a traceback or a MemoryError."""
    path = case.make(tmp_path)
    line = assert_one_line_error(dnsd(mode, str(path), timeout=20), prefix=f"dnsd: {path}")
    assert re.match(case.error, line[len(f"dnsd: {path}") :]), f"{case.error!r} does not match {line!r}"


@pytest.mark.parametrize("mode", ["check-config", "--config"])
def test_unreadable_config_file(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text("workers: 1\n")
    path.chmod(0)
    line = assert_one_line_error(dnsd(mode, str(path), timeout=20, prefix=AS_UNPRIVILEGED))
    assert line == f"dnsd: {path}: cannot read: Permission denied", line


# ---------------------------------------------------------------- flags


@dataclass(frozen=True)
class FlagCase:
    id: str
    args: tuple[str, ...]
    rc: int
    error: str  # regex the (last) stderr line must match


FLAG_CASES = [
    FlagCase("listen-port", ("--listen", "127.0.0.1:70000"), 1, r"dnsd: --listen\[0\]: port .*70000"),
    FlagCase("listen-nonsense", ("--listen", "nonsense"), 1, r"dnsd: --listen\[0\]: .*'nonsense'"),
    FlagCase("listen-empty", ("--listen", ""), 1, r"dnsd: --listen\[0\]: must be 'host:port'"),
    FlagCase("listen-open-bracket", ("--listen", "[::1:53"), 1, r"dnsd: --listen\[0\]: .*'\[::1:53'"),
    FlagCase("listen-port-letters", ("--listen", "127.0.0.1:dns"), 1, r"dnsd: --listen\[0\]: .*'127.0.0.1:dns'"),
    FlagCase("listen-negative-port", ("--listen", "127.0.0.1:-1"), 1, r"dnsd: --listen\[0\]: "),
    FlagCase("listen-five-octets", ("--listen", "1.2.3.4.5:53"), 1, r"dnsd: --listen\[0\]: host must be an IP"),
    FlagCase("listen-second-bad", ("--listen", "127.0.0.1:0", "--listen", "x"), 1, r"dnsd: --listen\[1\]: "),
    FlagCase("listen-huge-port", ("--listen", "127.0.0.1:" + "9" * 40), 1, r"dnsd: --listen\[0\]: port must be"),
    FlagCase("domain", ("--domain", "bad domain!"), 1, r"dnsd: --domain: must be a domain name: 'bad domain!'"),
    FlagCase("http", ("--http", "everywhere"), 1, r"dnsd: --http: .*'everywhere'"),
    FlagCase("upstream", ("--upstream", "not an ip"), 1, r"dnsd: --upstream\[0\]: .*'not an ip'"),
    FlagCase("log-level", ("--log-level", "loud"), 2, r"dnsd: error: argument --log-level: invalid choice: 'loud'"),
    FlagCase("unknown-flag", ("--listne", "127.0.0.1:0"), 2, r"dnsd: error: unrecognized arguments: --listne"),
    FlagCase(
        "manifests-is-a-file",
        ("--manifests", "tests/data/configs/good/empty-file.yaml"),
        1,
        r"dnsd: cluster\.source\.files: 'tests/data/configs/good/empty-file\.yaml' is a file, not a directory",
    ),
    FlagCase("config-directory", ("--config", "tests"), 1, r"dnsd: tests: is a directory, not a config file$"),
]


@pytest.mark.parametrize("case", FLAG_CASES, ids=[c.id for c in FLAG_CASES])
def test_bad_flag_value_exits_with_one_line(case: FlagCase) -> None:
    args = ["--manifests", E2E_REL, "--http", "off"]
    if "--listen" not in case.args:
        args += ["--listen", "127.0.0.1:0"]
    out = dnsd(*args, *case.args, timeout=20)
    assert out.returncode == case.rc, out
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.splitlines()
    if case.rc == 1:
        assert len(lines) == 1, out.stderr
    else:  # argparse: the usage line, then the error
        assert lines and lines[0].startswith("usage: dnsd"), out.stderr
    assert re.match(case.error, lines[-1]), f"{case.error!r} does not match {lines[-1]!r}"


def test_missing_manifest_directory_is_watched_until_it_appears(
    tmp_path: Path, proc_cleanup: list[DnsdProcess]
) -> None:
    """A --manifests directory that does not exist yet is allowed (unlike one that is a file)."""
    manifests = tmp_path / "later"
    p = start_dnsd_process(["--listen", "127.0.0.1:0", "--http", "off", "--manifests", str(manifests)])
    proc_cleanup.append(p)
    assert "manifest directory does not exist" in "".join(p.lines)
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "cluster.yaml").write_text((E2E / "cluster.yaml").read_text())
    staging.rename(manifests)
    wait_until(lambda: rr_lines(query(p, "web.default.svc.cluster.local.", "A").answer) == zone_lines(WEB_A), 10)


def test_check_config_help() -> None:
    out = dnsd("check-config", "--help")
    assert out.returncode == 0 and out.stdout.startswith("usage: dnsd check-config FILE"), out
    out = dnsd("check-config")
    assert out.returncode == 2 and out.stderr.startswith("usage: dnsd check-config FILE"), out


# ---------------------------------------------------------------- running the process


@pytest.fixture
def proc_cleanup() -> Iterator[list[DnsdProcess]]:
    started: list[DnsdProcess] = []
    yield started
    for p in started:
        p.stop()


def test_flags_listen_manifests_domain(proc_cleanup: list[DnsdProcess]) -> None:
    p = start_dnsd_process(
        ["--listen", "127.0.0.1:0", "--manifests", E2E_REL, "--domain", "example.internal", "--log-level", "warning"]
    )
    proc_cleanup.append(p)
    assert p.host == "127.0.0.1" and p.port != 0
    msg = query(p, "web.default.svc.example.internal.", "A")
    assert rcode_text(msg) == "NOERROR"
    assert msg.flags & dns.flags.AA
    assert rr_lines(msg.answer) == zone_lines("web.default.svc.example.internal. 5 IN A 10.96.0.20")
    # the default domain is no longer served
    assert rcode_text(query(p, "web.default.svc.cluster.local.", "A")) == "REFUSED"


def test_config_file_and_override(tmp_path: Path, proc_cleanup: list[DnsdProcess]) -> None:
    cfg = tmp_path / "dnsd.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "listen": ["127.0.0.1:0"],
                "http": None,
                "forward": None,
                "cluster": {"ttl": 30, "source": {"files": str(E2E)}},
            }
        )
    )
    p = start_dnsd_process(["--config", str(cfg), "--listen", "127.0.0.1:0"])
    proc_cleanup.append(p)
    msg = query(p, "web.default.svc.cluster.local.", "A", tcp=True)
    assert rr_lines(msg.answer) == zone_lines("web.default.svc.cluster.local. 30 IN A 10.96.0.20")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly(sig: signal.Signals, proc_cleanup: list[DnsdProcess]) -> None:
    p = start_dnsd_process(["--listen", "127.0.0.1:0", "--manifests", E2E_REL])
    proc_cleanup.append(p)
    msg = query(p, "web.default.svc.cluster.local.", "A")
    assert rr_lines(msg.answer) == zone_lines(WEB_A)
    p.proc.send_signal(sig)
    rc = p.proc.wait(10)
    assert rc == 0, "".join(p.lines)
    out = "".join(p.lines)
    assert "Traceback" not in out, out


def test_taken_port_exits_nonzero_naming_the_address(proc_cleanup: list[DnsdProcess]) -> None:
    first = start_dnsd_process(["--listen", "127.0.0.1:0", "--manifests", E2E_REL])
    proc_cleanup.append(first)
    taken = f"127.0.0.1:{first.port}"
    second = subprocess.run(
        [sys.executable, "-m", "dnsd", "--listen", taken, "--manifests", E2E_REL],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1, second
    assert taken in second.stderr and "Address already in use" in second.stderr, second.stderr
    # the first server is unaffected
    assert rr_lines(query(first, "web.default.svc.cluster.local.", "A").answer) == zone_lines(WEB_A)


# ---------------------------------------------------------------- dig, kdig, nslookup


@pytest.fixture(scope="module")
def e2e_server() -> Iterator[DnsdProcess]:
    p = start_dnsd_process(["--listen", "127.0.0.1:0", "--manifests", E2E_REL])
    yield p
    p.stop()


@dataclass(frozen=True)
class Parsed:
    status: str
    flags: frozenset[str]
    answer: frozenset[str]
    authority: list[str]


def _section(out: str, title: str) -> list[str]:
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == f";; {title} SECTION:":
            body: list[str] = []
            for rr in lines[i + 1 :]:
                if not rr.strip():
                    break
                if not rr.startswith(";"):
                    body.append(rr)
            return body
    return []


def parse_dig(out: str) -> Parsed:
    """dig and kdig print the same sections; dig writes `status: X,` and `flags:`, kdig `status: X;` and `Flags:`."""
    status = re.search(r"status: ([A-Z]+)", out)
    flags = re.search(r";; [Ff]lags: ([a-z ]*);", out)
    assert status and flags, out
    answer = _section(out, "ANSWER")
    return Parsed(
        status.group(1),
        frozenset(flags.group(1).split()),
        frozenset(zone_lines("\n".join(answer))) if answer else frozenset(),
        _section(out, "AUTHORITY"),
    )


def soa_without_serial(lines: list[str]) -> list[list[str]]:
    out: list[list[str]] = []
    for line in lines:
        f = line.split()
        if len(f) >= 11 and f[3] == "SOA":
            out.append([f[0].lower(), f[1], f[2], f[3], f[4].lower(), f[5].lower(), *f[7:]])
        else:
            out.append(f)
    return out


APEX_SOA = ["cluster.local.", "5", "IN", "SOA", "ns.dns.cluster.local.", "hostmaster.cluster.local.",
            "7200", "1800", "86400", "5"]  # fmt: skip


@dataclass(frozen=True)
class DigCase:
    id: str
    args: tuple[str, ...]  # name, type and options after `@127.0.0.1 -p PORT`
    status: str
    answer: str = ""  # zone-file text
    aa: bool = True
    soa: bool = False  # the apex SOA (serial aside) is the one authority record


DIG_CASES = [
    DigCase("a-udp", ("web.default.svc.cluster.local", "A"), "NOERROR", WEB_A),
    DigCase("a-tcp", ("web.default.svc.cluster.local", "A", "+tcp"), "NOERROR", WEB_A),
    DigCase("a-noedns", ("web.default.svc.cluster.local", "A", "+noedns"), "NOERROR", WEB_A),
    DigCase("mixed-case", ("WEB.Default.SVC.cluster.LOCAL", "A"), "NOERROR", WEB_A),
    DigCase(
        "srv-named-port",
        ("_http._tcp.web.default.svc.cluster.local", "SRV"),
        "NOERROR",
        "_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local.",
    ),
    DigCase(
        "srv-bare-two-ports-one-target",
        ("kube-dns.kube-system.svc.cluster.local", "SRV", "+tcp"),
        "NOERROR",
        "kube-dns.kube-system.svc.cluster.local. 5 IN SRV 0 50 53 kube-dns.kube-system.svc.cluster.local.",
    ),
    DigCase(
        "headless",
        ("db.default.svc.cluster.local", "A"),
        "NOERROR",
        "db.default.svc.cluster.local. 5 IN A 10.244.0.5\ndb.default.svc.cluster.local. 5 IN A 10.244.0.6",
    ),
    DigCase(
        "endpoint-hostname",
        ("db-0.db.default.svc.cluster.local", "A"),
        "NOERROR",
        "db-0.db.default.svc.cluster.local. 5 IN A 10.244.0.5",
    ),
    DigCase(
        "endpoint-dashed-ip",
        ("10-244-0-6.db.default.svc.cluster.local", "A"),
        "NOERROR",
        "10-244-0-6.db.default.svc.cluster.local. 5 IN A 10.244.0.6",
    ),
    DigCase("ptr", ("-x", "10.96.0.20"), "NOERROR", "20.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local."),
    DigCase("nxdomain", ("nope.default.svc.cluster.local", "A"), "NXDOMAIN", soa=True),
    DigCase("nodata", ("web.default.svc.cluster.local", "AAAA"), "NOERROR", soa=True),
    DigCase("nxdomain-tcp", ("nope.default.svc.cluster.local", "A", "+tcp"), "NXDOMAIN", soa=True),
    DigCase("outside-zone-refused", ("example.com", "A"), "REFUSED", aa=False),
    DigCase("outside-zone-refused-tcp", ("www.example.org", "AAAA", "+tcp"), "REFUSED", aa=False),
]

TOOLS = {
    "dig": ["dig", "+time=2", "+tries=1"],
    "kdig": ["kdig", "+time=2", "+retry=0"],
}


@pytest.mark.parametrize("tool", list(TOOLS))
@pytest.mark.parametrize("case", DIG_CASES, ids=[c.id for c in DIG_CASES])
def test_dig_kdig(e2e_server: DnsdProcess, tool: str, case: DigCase) -> None:
    cmd = [*TOOLS[tool], f"@{e2e_server.host}", "-p", str(e2e_server.port), *case.args]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
    assert out.returncode == 0, out
    got = parse_dig(out.stdout)
    assert got.status == case.status, out.stdout
    assert "qr" in got.flags and "ad" not in got.flags, out.stdout
    assert ("aa" in got.flags) == case.aa, out.stdout
    assert got.answer == frozenset(zone_lines(case.answer)) if case.answer else got.answer == frozenset(), out.stdout
    if case.soa:
        assert soa_without_serial(got.authority) == [APEX_SOA], out.stdout


@pytest.mark.parametrize("tool", list(TOOLS))
@pytest.mark.parametrize(
    "args, want",
    [
        (("web.default.svc.cluster.local", "A"), ["10.96.0.20"]),
        (("web.default.svc.cluster.local", "A", "+tcp"), ["10.96.0.20"]),
        (("db.default.svc.cluster.local", "A"), ["10.244.0.5", "10.244.0.6"]),
        (("_http._tcp.web.default.svc.cluster.local", "SRV"), ["0 100 80 web.default.svc.cluster.local."]),
        (("nope.default.svc.cluster.local", "A"), []),
    ],
    ids=["a", "a-tcp", "headless", "srv", "nxdomain"],
)
def test_dig_kdig_short(e2e_server: DnsdProcess, tool: str, args: tuple[str, ...], want: list[str]) -> None:
    cmd = [*TOOLS[tool], f"@{e2e_server.host}", "-p", str(e2e_server.port), *args, "+short"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
    assert out.returncode == 0, out
    lines = sorted(x.strip() for x in out.stdout.splitlines() if x.strip() and not x.startswith(";"))
    assert lines == sorted(want), out.stdout


def _nslookup(server: DnsdProcess, name: str, *opts: str) -> subprocess.CompletedProcess[str]:
    cmd = ["nslookup", f"-port={server.port}", "-timeout=2", "-retry=1", *opts, name, server.host]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=15)


def _nslookup_answers(out: str) -> list[tuple[str, str]]:
    """(name, address) pairs from `Name:` / `Address:` lines after the server banner."""
    pairs: list[tuple[str, str]] = []
    name = ""
    for line in out.splitlines():
        m = re.match(r"Name:\s+(\S+)", line)
        if m:
            name = m.group(1).rstrip(".").lower()
            continue
        m = re.match(r"Address:\s+(\S+)$", line)
        if m and name and "#" not in m.group(1):
            pairs.append((name, m.group(1)))
    return pairs


@pytest.mark.parametrize(
    "name, want",
    [
        ("web.default.svc.cluster.local", [("web.default.svc.cluster.local", "10.96.0.20")]),
        ("db.default.svc.cluster.local", [("db.default.svc.cluster.local", "10.244.0.5"),
                                          ("db.default.svc.cluster.local", "10.244.0.6")]),
        ("db-0.db.default.svc.cluster.local.", [("db-0.db.default.svc.cluster.local", "10.244.0.5")]),
    ],
    ids=["clusterip", "headless", "endpoint-fqdn"],
)  # fmt: skip
def test_nslookup(e2e_server: DnsdProcess, name: str, want: list[tuple[str, str]]) -> None:
    out = _nslookup(e2e_server, name)
    assert out.returncode == 0, out
    assert sorted(_nslookup_answers(out.stdout)) == sorted(want), out.stdout


def test_nslookup_ptr(e2e_server: DnsdProcess) -> None:
    out = _nslookup(e2e_server, "10.96.0.20")
    assert out.returncode == 0, out
    assert re.search(r"20\.0\.96\.10\.in-addr\.arpa\s+name = web\.default\.svc\.cluster\.local\.", out.stdout), out


def test_nslookup_nxdomain(e2e_server: DnsdProcess) -> None:
    out = _nslookup(e2e_server, "nope.default.svc.cluster.local.")
    assert out.returncode != 0, out
    assert "NXDOMAIN" in out.stdout + out.stderr, out


def test_process_still_serving_after_e2e(e2e_server: DnsdProcess) -> None:
    """The clients above (cookies, +noedns, TCP) left the process answering, with nothing logged as a crash."""
    assert e2e_server.proc.poll() is None, "".join(e2e_server.lines)
    msg = query(e2e_server, "web.default.svc.cluster.local.", "A")
    assert rr_lines(msg.answer) == zone_lines(WEB_A)
    assert "Traceback" not in "".join(e2e_server.lines)
