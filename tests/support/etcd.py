"""etcd from Debian (`etcd-server`) on loopback, started by the tests: one member or a small cluster, each member
on free high ports with its own data directory, stopped (or killed mid-watch) by its PID."""

from __future__ import annotations

import base64
import json
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import stop_process, wait_until
from support.nsd import free_port

# Progress notifications every second (etcd's default is 10 minutes): a quiet watch still confirms it is current.
PROGRESS_INTERVAL = "1s"


def etcd_binary() -> str:
    exe = shutil.which("etcd") or "/usr/bin/etcd"
    if not Path(exe).exists():
        raise AssertionError("etcd is not installed: `apt-get install etcd-server etcd-client` (Debian packages)")
    return exe


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


@dataclass
class Member:
    """One etcd member: its name, ports and data directory; proc is None while it is stopped."""

    name: str
    client_port: int
    peer_port: int
    metrics_port: int
    data: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


@dataclass
class Etcd:
    """A loopback etcd cluster of one or more members (member 0 is the one a test talks to by default)."""

    members: list[Member]
    cluster: str  # --initial-cluster
    token: str
    started: list[Member] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.members[0].url

    # ------------------------------------------------------------ processes

    def launch(self, m: Member, state: str = "new") -> None:
        """Start a member (again, over its existing data directory when restarted), not waited for."""
        m.data.mkdir(parents=True, exist_ok=True)
        args = [
            etcd_binary(), "--name", m.name, "--data-dir", str(m.data),
            "--listen-client-urls", m.url, "--advertise-client-urls", m.url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", self.cluster, "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            "--listen-metrics-urls", f"http://127.0.0.1:{m.metrics_port}",
            "--experimental-watch-progress-notify-interval", PROGRESS_INTERVAL,
        ]  # fmt: skip
        with m.log.open("ab") as out:
            m.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        if m not in self.started:
            self.started.append(m)

    def wait_healthy(self, m: Member, timeout: float = 30.0) -> None:
        def healthy() -> bool:
            assert m.proc is not None and m.proc.poll() is None, f"etcd {m.name} exited:\n{m.log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(m.url + "/health", timeout=1) as resp:
                    return bool(json.loads(resp.read()).get("health") == "true")
            except (OSError, ValueError):
                return False

        wait_until(healthy, timeout=timeout, interval=0.05)

    def kill(self, m: Member | None = None) -> None:
        """SIGKILL a member (a crash: no goodbye to its clients) and reap it."""
        m = m or self.members[0]
        assert m.proc is not None
        m.proc.send_signal(signal.SIGKILL)
        m.proc.wait(10)
        m.proc = None
        if any(o.proc is not None for o in self.members):
            self.wait_leader()

    def wait_leader(self, timeout: float = 30.0) -> None:
        """Until the running members agree on a leader that is running (after a kill, a new one is elected
        within a few election timeouts; writes made before that time out)."""
        alive = [m for m in self.members if m.proc is not None]

        def status(m: Member) -> dict[str, Any]:
            try:
                return self.call("/v3/maintenance/status", {}, m, timeout=1)
            except (OSError, AssertionError, ValueError):
                return {}

        def elected() -> bool:
            got = [status(m) for m in alive]
            ids = {g.get("header", {}).get("member_id") for g in got}
            leaders = {g.get("leader") for g in got}
            return len(leaders) == 1 and leaders <= ids and None not in ids

        wait_until(elected, timeout=timeout, interval=0.1)

    def restart(self, m: Member | None = None) -> None:
        """Start a killed member again on the same ports and data directory, once it is healthy."""
        m = m or self.members[0]
        self.launch(m, state="existing")
        self.wait_healthy(m)

    def stop(self) -> None:
        for m in self.started:
            if m.proc is not None:
                stop_process(m.proc)
                m.proc = None

    # ------------------------------------------------------------ the v3 JSON gateway (what etcdctl would do)

    def call(
        self, path: str, body: dict[str, Any], member: Member | None = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        req = urllib.request.Request(
            (member or self.members[0]).url + path, data=json.dumps(body).encode(), method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                out: dict[str, Any] = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"etcd {path}: HTTP {exc.code}: {exc.read()!r}") from None
        return out

    def put(self, key: str, value: str | dict[str, Any], member: Member | None = None) -> int:
        """Put a key (a dict value is written as JSON); the revision it made."""
        text = value if isinstance(value, str) else json.dumps(value)
        out = self.call("/v3/kv/put", {"key": b64(key), "value": b64(text)}, member)
        return int(out["header"]["revision"])

    def delete(self, key: str, member: Member | None = None) -> int:
        out = self.call("/v3/kv/deleterange", {"key": b64(key)}, member)
        assert int(out.get("deleted", 0)) == 1, f"{key} was not there: {out}"
        return int(out["header"]["revision"])

    def revision(self) -> int:
        out = self.call("/v3/kv/range", {"key": b64("\0"), "limit": "1"})
        return int(out["header"]["revision"])

    def etcdctl(self, *args: str, member: Member | None = None) -> str:
        """Run the real etcdctl (etcd-client) against a member (member 0 by default); its output."""
        exe = shutil.which("etcdctl") or "/usr/bin/etcdctl"
        out = subprocess.run(
            [exe, "--endpoints", (member or self.members[0]).url, *args],
            capture_output=True,
            text=True,
            timeout=20,
            env={"ETCDCTL_API": "3"},
        )
        assert out.returncode == 0, f"etcdctl {args}: {out.stdout}{out.stderr}"
        return out.stdout


def start_etcd(work: Path, members: int = 1) -> Etcd:
    """An etcd cluster of `members` members on loopback free ports, data under work; returned once all are healthy.
    Stop it with .stop() (by PID)."""
    ms: list[Member] = []
    for i in range(members):
        d = work / f"m{i}"
        d.mkdir(parents=True, exist_ok=True)
        ms.append(Member(f"m{i}", free_port(), free_port(), free_port(), d / "data", d / "etcd.log"))
    cluster = ",".join(f"{m.name}={m.peer_url}" for m in ms)
    etcd = Etcd(ms, cluster, token=f"dnsd-test-{ms[0].client_port}")
    try:
        for m in ms:
            etcd.launch(m)
        for m in ms:
            etcd.wait_healthy(m)
    except BaseException:
        etcd.stop()
        raise
    return etcd
