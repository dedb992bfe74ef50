"""SIGTERM while the first load is still running: dnsd stops at once (exit 0) instead of finishing the load, and the
child process parsing a big manifest file does not outlive it.

The manifest directory holds one `kind: List` of about 20 MB, which the files source parses in a child process
(files over PARSE_APART_BYTES); that takes seconds, during which the server already answers SERVFAIL for the
cluster names it cannot know yet. The test waits for that SERVFAIL, finds the parse child, sends SIGTERM and checks
that the load was abandoned (the log says so, no "loaded N objects" line) and the child is gone.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.rcode
from support import REPO, query, wait_until

from dnsd.sources.files import PARSE_APART_BYTES

SERVICES = 150_000  # about 22 MB of YAML: several seconds of parsing on these machines


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def children_of(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(c) for c in text]
    return out


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_during_the_first_load_stops_at_once(tmp_path: Path) -> None:
    root = tmp_path / "manifests"
    root.mkdir()
    lines = ["apiVersion: v1", "kind: List", "items:", "- {apiVersion: v1, kind: Namespace, metadata: {name: default}}"]
    for i in range(SERVICES):
        ip = f"10.{96 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}"
        lines.append(
            f"- {{apiVersion: v1, kind: Service, metadata: {{name: s{i}, namespace: default}}, "
            f"spec: {{clusterIP: {ip}, ports: [{{name: http, port: 80}}]}}}}"
        )
    (root / "all.yaml").write_text("\n".join(lines) + "\n")
    assert (root / "all.yaml").stat().st_size > 2 * PARSE_APART_BYTES
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnsd", "--listen", f"127.0.0.1:{port}", "--http", "off", "--manifests", str(root)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        # Listening, not synced: a name it cannot know yet is SERVFAIL (never NXDOMAIN).
        def servfail() -> bool:
            try:
                return query(("127.0.0.1", port), "s1.default.svc.cluster.local.", timeout=0.5).rcode() == (
                    dns.rcode.SERVFAIL
                )
            except Exception:
                return False

        wait_until(servfail, 30)
        parser = wait_until(lambda: children_of(proc.pid), 30)[0]
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        print(f"exited {time.monotonic() - sent:.2f} s after SIGTERM")
        wait_until(lambda: not alive(parser), 10)
        reader.join(5)
        text = "".join(output)
        assert "stopped while loading" in text, text
        assert "loaded" not in text and "listening on" not in text, text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
