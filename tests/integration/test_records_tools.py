"""End to end through real clients: `dig` (BIND) and `kdig` (Knot) against a dnsd process.

Most cases run against what `make run` serves: `python -m dnsd --config config/dnsd.yaml` (the
example cluster in config/cluster, pods insecure), started on a free port. A few run against the
test fixture cluster. Expected answers are zone-file lines written from the Kubernetes DNS spec and the
manifests; dig's and kdig's presentation output is compared after collapsing whitespace.
"""

# ruff: noqa: E501  (zone-file lines are kept whole, one record a line)

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from support import DnsdHandle, DnsdProcess, start_dnsd_process

# dig (bind9-dnsutils) and kdig (knot-dnsutils) are required, not optional: `make test` and .ci/run install them,
# and a missing tool fails these tests rather than skipping them.


@pytest.fixture(scope="module")
def example_server() -> Iterator[DnsdProcess]:
    """dnsd as `make run` starts it, but on a free port."""
    proc = start_dnsd_process(["--config", "config/dnsd.yaml", "--listen", "127.0.0.1:0"])
    yield proc
    assert proc.stop() == 0


@dataclass(frozen=True)
class ToolCase:
    tool: str  # "dig" or "kdig"
    args: tuple[str, ...]  # name, type and +options (the server, port and +norecurse are added)
    status: str = "NOERROR"  # unused for +short
    answer: str = ""  # zone-file lines; with +short, the rdata lines
    extra: str | None = None  # the additional section, when checked
    soa_zone: str | None = None  # negative answers: the SOA owner expected in authority

    @property
    def short(self) -> bool:
        return "+short" in self.args

    @property
    def id(self) -> str:
        return f"{self.tool} {' '.join(self.args)}"


def run_tool(host: str, port: int, case: ToolCase) -> str:
    timing = ["+time=2", "+tries=1"] if case.tool == "dig" else ["+timeout=2", "+retry=0"]
    cmd = [case.tool, f"@{host}", "-p", str(port), "+norecurse", *timing, *case.args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=15, check=False)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}: {done.stdout}{done.stderr}"
    return done.stdout


def norm(line: str) -> str:
    return " ".join(line.split())


def section(output: str, title: str) -> set[str]:
    """The record lines of one section of dig/kdig output (';; ANSWER SECTION:' and so on)."""
    lines = output.splitlines()
    out: set[str] = set()
    for i, line in enumerate(lines):
        if line.strip() == f";; {title} SECTION:":
            for rec in lines[i + 1 :]:
                if not rec.strip():
                    break
                if not rec.startswith(";"):
                    out.add(norm(rec))
    return out


def zone_text(text: str) -> set[str]:
    return {norm(line) for line in text.strip().splitlines() if line.strip()}


def check_tool(host: str, port: int, case: ToolCase) -> None:
    out = run_tool(host, port, case)
    if case.short:
        assert zone_text(out) == zone_text(case.answer), out
        return
    status = re.search(r"status: ([A-Z]+)", out)
    assert status is not None, out
    assert status.group(1) == case.status, out
    flags = re.search(r";; flags: ([a-z ]*);", out, re.IGNORECASE)
    assert flags is not None, out
    flag_set = set(flags.group(1).split())
    assert {"qr", "aa"} <= flag_set, f"flags {flag_set}\n{out}"
    assert "rd" not in flag_set, f"RD was not asked for\n{out}"
    assert "tc" not in flag_set, out
    assert section(out, "ANSWER") == zone_text(case.answer), out
    if case.extra is not None:
        assert section(out, "ADDITIONAL") == zone_text(case.extra), out
    if case.soa_zone is not None:
        auth = section(out, "AUTHORITY")
        z = case.soa_zone
        assert len(auth) == 1, out
        (soa,) = auth
        assert re.fullmatch(
            rf"{re.escape(z)} 5 IN SOA ns\.dns\.{re.escape(z)} hostmaster\.{re.escape(z)} [1-9][0-9]* 7200 1800 86400 5",
            soa,
        ), soa


EXAMPLE_CASES = [
    ToolCase(
        "dig",
        ("web.default.svc.cluster.local", "A"),
        answer="web.default.svc.cluster.local. 5 IN A 10.96.0.20",
    ),
    ToolCase("dig", ("+short", "web.default.svc.cluster.local"), answer="10.96.0.20"),
    ToolCase(
        "dig",
        ("+tcp", "_http._tcp.web.default.svc.cluster.local", "SRV"),
        answer="_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local.",
        extra="web.default.svc.cluster.local. 5 IN A 10.96.0.20",
    ),
    ToolCase(
        "kdig",
        ("db.data.svc.cluster.local", "SRV"),
        answer="""
        db.data.svc.cluster.local. 5 IN SRV 0 50 5432 db-0.db.data.svc.cluster.local.
        db.data.svc.cluster.local. 5 IN SRV 0 50 5432 db-1.db.data.svc.cluster.local.
        """,
        extra="""
        db-0.db.data.svc.cluster.local. 5 IN A 10.244.1.40
        db-1.db.data.svc.cluster.local. 5 IN A 10.244.2.41
        """,
    ),
    ToolCase("kdig", ("db-2.db.data.svc.cluster.local", "A"), status="NXDOMAIN", soa_zone="cluster.local."),
    ToolCase(
        "kdig",
        ("+tcp", "api.shop.svc.cluster.local", "SRV"),
        answer="""
        api.shop.svc.cluster.local. 5 IN SRV 0 25 80 api.shop.svc.cluster.local.
        api.shop.svc.cluster.local. 5 IN SRV 0 25 9090 api.shop.svc.cluster.local.
        """,
        extra="""
        api.shop.svc.cluster.local. 5 IN A 10.96.0.30
        api.shop.svc.cluster.local. 5 IN AAAA fd00:10:96::30
        """,
    ),
    ToolCase(
        "dig",
        ("payments.shop.svc.cluster.local", "CNAME"),
        answer="payments.shop.svc.cluster.local. 5 IN CNAME api.stripe.com.",
    ),
    ToolCase(
        "dig",
        ("-x", "10.244.1.5"),
        answer="5.1.244.10.in-addr.arpa. 5 IN PTR 10-244-1-5.web.default.svc.cluster.local.",
    ),
    ToolCase("dig", ("-x", "10.244.2.8"), status="NXDOMAIN", soa_zone="in-addr.arpa."),
    ToolCase(
        "kdig",
        ("+short", "workers.shop.svc.cluster.local", "AAAA"),
        answer="""
        fd00:10:244:1::14
        fd00:10:244:2::15
        """,
    ),
    ToolCase(
        "kdig",
        ("fd00-10-244-1--14.workers.shop.svc.cluster.local", "AAAA"),
        answer="fd00-10-244-1--14.workers.shop.svc.cluster.local. 5 IN AAAA fd00:10:244:1::14",
    ),
    ToolCase(
        "dig",
        ("+tcp", "legacy.default.svc.cluster.local", "A"),
        answer="legacy.default.svc.cluster.local. 5 IN A 10.96.0.40",
    ),
    ToolCase(
        "kdig",
        ("-x", "10.244.3.10"),
        answer="10.3.244.10.in-addr.arpa. 5 IN PTR 10-244-3-10.legacy.default.svc.cluster.local.",
    ),
    ToolCase(
        "kdig",
        ("10-244-1-5.default.pod.cluster.local", "A"),
        answer="10-244-1-5.default.pod.cluster.local. 5 IN A 10.244.1.5",
    ),
    ToolCase("dig", ("nosuch.default.svc.cluster.local", "A"), status="NXDOMAIN", soa_zone="cluster.local."),
    ToolCase("kdig", ("default.svc.cluster.local", "A"), soa_zone="cluster.local."),
    ToolCase("dig", ("+short", "dns-version.cluster.local", "TXT"), answer='"1.1.0"'),
]


@pytest.mark.parametrize("case", EXAMPLE_CASES, ids=[c.id for c in EXAMPLE_CASES])
def test_example_cluster(example_server: DnsdProcess, case: ToolCase) -> None:
    check_tool(example_server.host, example_server.port, case)


def test_outside_the_zone_is_refused(example_server: DnsdProcess) -> None:
    out = run_tool(example_server.host, example_server.port, ToolCase("dig", ("example.com", "A")))
    status = re.search(r"status: ([A-Z]+)", out)
    assert status is not None and status.group(1) == "REFUSED", out


FIXTURE_CASES = [
    ToolCase(
        "dig",
        ("+tcp", "_http._tcp.hdls1.testns.svc.cluster.local", "SRV"),
        answer="""
        _http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 172-0-0-11.hdls1.testns.svc.cluster.local.
        _http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 172-0-0-12.hdls1.testns.svc.cluster.local.
        _http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 dup-name.hdls1.testns.svc.cluster.local.
        _http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 5678-abcd--1.hdls1.testns.svc.cluster.local.
        _http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 5678-abcd--2.hdls1.testns.svc.cluster.local.
        """,
        extra="""
        172-0-0-11.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.11
        172-0-0-12.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.12
        dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.13
        dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.14
        5678-abcd--1.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1
        5678-abcd--2.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::2
        """,
    ),
    ToolCase(
        "kdig",
        ("-x", "172.0.0.1"),
        answer="""
        1.0.0.172.in-addr.arpa. 5 IN PTR ep1a.svc1.testns.svc.cluster.local.
        1.0.0.172.in-addr.arpa. 5 IN PTR 172-0-0-1.shared.testns.svc.cluster.local.
        """,
    ),
    # dig, not kdig: kdig lower-cases the name it sends.
    ToolCase(
        "dig",
        ("_HtTp._TcP.sVc1.TeStNs.SvC.cLuStEr.LoCaL", "SRV"),
        answer="_HtTp._TcP.sVc1.TeStNs.SvC.cLuStEr.LoCaL. 5 IN SRV 0 100 80 svc1.testns.svc.cLuStEr.LoCaL.",
        extra="svc1.testns.svc.cLuStEr.LoCaL. 5 IN A 10.0.0.1",
    ),
]


@pytest.mark.parametrize("case", FIXTURE_CASES, ids=[c.id for c in FIXTURE_CASES])
def test_fixture_cluster(fixture_server: DnsdHandle, case: ToolCase) -> None:
    check_tool(fixture_server.host, fixture_server.port, case)
