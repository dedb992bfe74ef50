"""The status page in a real headless browser (Debian's chromium, its own CLI): it loads without a console error,
shows numbers, and the numbers move when queries are sent between two loads. The browser reaches 127.0.0.1 only."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from support import FIXTURE_CLUSTER, REPO, DnsdHandle, base_config, query

from dnsd import __version__

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NXDOMAIN_NAME = "nope.default.svc.cluster.local."  # no such Service in tests/data/cluster
FOUND_NAME = "kubernetes.default.svc.cluster.local."


class Dom(HTMLParser):
    """Each element with an id: its data-value attribute and its text (the page writes numbers into both)."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.texts: dict[str, str] = {}
        self.body: dict[str, str] = {}
        self.rows: dict[str, list[list[str]]] = {}  # each table's body rows (by the table's id): the cell texts
        self._open: list[str] = []
        self._table = ""
        self._in_body = False
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.body = a
        if "id" in a:
            self.texts.setdefault(a["id"], "")
            if "data-value" in a:
                self.values[a["id"]] = a["data-value"]
            self._open.append(a["id"])
        else:
            self._open.append("")
        if tag == "table":
            self._table = a.get("id", "")
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.setdefault(self._table, []).append(self._row)
            self._row = None
        elif tag == "tbody":
            self._in_body = False
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for ident in self._open:
            if ident:
                self.texts[ident] += data
        if self._cell is not None:
            self._cell.append(data)

    def number(self, ident: str) -> float:
        return float(self.values[ident])


@dataclass
class Load:
    dom: Dom
    console: list[str]  # the page's CONSOLE lines: script errors, CSP violations, failed fetches


def load(url: str, profile: Path, budget_ms: int = 5000) -> Load:
    """One headless chromium run: open url, let the page run budget_ms of virtual time (it polls every 2 s), print
    the DOM. Stopped by its process group's id (the session it leads) if it overruns."""
    args = [
        CHROMIUM,
        "--headless=new",
        f"--user-data-dir={profile}",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--disable-breakpad",
        # Every host name fails to resolve: the browser can reach the literal 127.0.0.1 only (the network rule).
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--enable-logging=stderr",
        "--v=0",
        f"--virtual-time-budget={budget_ms}",
        "--dump-dom",
        url,
    ]
    if os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # chromium refuses to run as root with its sandbox
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=profile
    )
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
        raise
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 0, err[-2000:]
    dom = Dom()
    dom.feed(out)
    return Load(dom, [line for line in err.splitlines() if ":CONSOLE" in line and not _browser_own(line)])


def _browser_own(line: str) -> bool:
    """A console line from chromium's own pages (`source: chrome://...`): its UI's messages, not the page's."""
    return " source: chrome://" in line or " source: devtools://" in line


@pytest.fixture
def page(dnsd_factory: Callable[..., DnsdHandle], tmp_path: Path) -> tuple[DnsdHandle, Callable[[], Load]]:
    assert Path(CHROMIUM).exists(), "chromium is not installed (make setup-tools, .ci/run install it)"
    cfg = base_config(FIXTURE_CLUSTER)
    cfg["http"] = "127.0.0.1:0"
    h = dnsd_factory(config=cfg)
    host, port = h.app.http.address
    runs = iter(range(100))

    def run() -> Load:
        profile = tmp_path / f"chromium-{next(runs)}"
        profile.mkdir()
        return load(f"http://{host}:{port}/", profile)

    return h, run


def rcode_counts(dom: Dom) -> dict[str, float]:
    """The rcode table's "since start" column."""
    return {row[0]: float(row[2].replace(",", "")) for row in dom.rows.get("rcode-table", []) if len(row) == 3}


def test_the_page_loads_shows_numbers_and_they_move(page: tuple[DnsdHandle, Callable[[], Load]]) -> None:
    h, run = page
    first = run()
    assert first.console == [], first.console
    d = first.dom
    assert int(d.body.get("data-loaded", "0")) >= 1, "the page never rendered /status.json"
    assert d.texts["error"] == ""
    assert d.texts["version"] == __version__
    assert d.texts["ready"] == "ready"
    assert d.texts["listen-dns"] == f"{h.host}:{h.port}"
    assert d.texts["listen-http"] == "{}:{}".format(*h.app.http.address)
    assert d.number("uptime") > 0
    start_total = d.number("q-total")
    assert d.texts["q-total"] == f"{int(start_total):,}"

    sent = {"NOERROR": 3, "NXDOMAIN": 5}
    for name, n in ((FOUND_NAME, sent["NOERROR"]), (NXDOMAIN_NAME, sent["NXDOMAIN"])):
        for _ in range(n):
            query(h, name)

    second = run()
    assert second.console == [], second.console
    assert second.dom.number("q-total") - start_total == sum(sent.values())
    assert second.dom.number("uptime") > d.number("uptime")
    assert second.dom.number("updated") > d.number("updated")
    if "dnsd_dns_responses_total" in second.dom.texts["missing"]:
        pytest.skip("the collector does not export dnsd_dns_responses_total yet: no rcode rows to compare")
    before, after = rcode_counts(d), rcode_counts(second.dom)
    assert {k: after[k] - before.get(k, 0) for k in sent} == sent


def test_a_query_name_is_shown_as_text_never_as_markup(page: tuple[DnsdHandle, Callable[[], Load]]) -> None:
    """Top NXDOMAIN names are the clients' text: a name holding markup must show as that text, not run. The
    names come from a stand-in for app.metrics.top_nxdomain, so that this checks the page whatever the sketch."""
    h, run = page
    top = [("<img/src=x/onerror=console.error(1)>.default.svc.cluster.local.", 7), ("x.default.svc.cluster.local.", 2)]
    h.call(lambda: setattr(h.app.metrics, "top_nxdomain", lambda n: top[:n]))
    got = run()
    assert got.console == [], got.console  # the onerror handler would have logged
    assert got.dom.rows["nxdomain"] == [[name, str(count)] for name, count in top]


def test_an_installed_dnsd_has_the_page(tmp_path: Path) -> None:
    """What `pip install .` (the Dockerfile's build) puts in site-packages: setuptools' build_py of a copy of the
    tree holds status.html only when pyproject names it as package data."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "dnsd", tmp_path / "dnsd", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "build-lib"
    subprocess.run(
        [sys.executable, "-c", "from setuptools import setup; setup()", "-q", "build_py", "--build-lib", str(out)],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert (out / "dnsd" / "http" / "status.py").exists()
    assert (out / "dnsd" / "http" / "status.html").exists()
