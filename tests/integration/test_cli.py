"""The command line (issue 2 section 5) and an end-to-end set through real clients (dig, kdig, nslookup).

Everything here runs the real process (`python -m dnsd ...`). The DNS answers expected from the process serving
tests/data/store/e2e are written from the spec digest: ClusterIP A (3.2), headless A per ready endpoint and
endpoint names (3.4), SRV priority 0 weight floor(100/N) (3.3), PTR for a ClusterIP (3.5), NXDOMAIN with the
apex SOA in authority (3.7, 4), TTL 5, AA on authoritative answers, REFUSED outside the served zones.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import pytest
import yaml
from support import REPO, DnsdProcess, config_expectations, query, rcode_text, rr_lines, start_dnsd_process, zone_lines

CONFIGS = REPO / "tests" / "data" / "configs"
GOOD = sorted((CONFIGS / "good").glob("*.yaml"))
BAD = sorted((CONFIGS / "bad").glob("*.yaml"))
SHIPPED = sorted((REPO / "config").glob("*.yaml"))
E2E = REPO / "tests" / "data" / "store" / "e2e"
E2E_REL = "tests/data/store/e2e"

WEB_A = "web.default.svc.cluster.local. 5 IN A 10.96.0.20"


def dnsd(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dnsd", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


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


def test_check_config_missing_file(tmp_path: Path) -> None:
    out = dnsd("check-config", str(tmp_path / "absent.yaml"))
    assert out.returncode != 0
    assert "absent.yaml" in out.stdout + out.stderr


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_start_with_bad_config_exits_nonzero(path: Path) -> None:
    out = dnsd("--config", str(path), timeout=20)
    assert out.returncode != 0, out
    assert_names_problem(path, out.stdout + out.stderr)


@pytest.mark.parametrize(
    "args, what",
    [
        (["--listen", "127.0.0.1:70000", "--manifests", E2E_REL], "70000"),
        (["--listen", "nonsense", "--manifests", E2E_REL], "nonsense"),
        (["--listen", "127.0.0.1:0", "--manifests", E2E_REL, "--domain", "bad domain!"], "bad domain!"),
    ],
    ids=["listen-port", "listen-nonsense", "domain"],
)
def test_bad_flag_value_exits_nonzero(args: list[str], what: str) -> None:
    out = dnsd(*args, timeout=20)
    assert out.returncode != 0, out
    assert what in out.stdout + out.stderr


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
