"""The parse cache: what the parse workers read from a manifest file, kept by the file's signature for a restart.

An entry is the very byte stream a parse worker sent for the file (framed pickles: its log records, the Parsed
head, the objects in chunks; see dnsd/sources/files.py), so a hit costs the unpickling the first start paid and
nothing else, and replays the same warnings. It is valid only for the same path with the same device, inode,
size, mtime and ctime (any write or rename changes ctime, even one that restores size and mtime) and for the same
format: FORMAT and a fingerprint of the code that reads and of the model it builds (the source text of
manifests.py, fastyaml.py, files.py (the framing), model.py and this module, and the versions of Python, PyYAML
and yaml_rs). A file changed within RACY_S of being read is not cached (its next change could keep the same mtime
and ctime, as git's "racily clean" entries). Anything wrong with an entry (truncated, another format, a checksum
mismatch, unreadable) makes it a miss; entries are written to a temporary file and renamed, so a reader never
sees half of one.

Where: `$DNSD_CACHE_DIR` when set ("" or "off": no cache), else `$XDG_CACHE_HOME/dnsd/manifests` (default
`~/.cache/dnsd/manifests`), else `<tmp>/dnsd-<uid>/manifests`. Entries are pickles, so the directory must belong
to this user and be writable by nobody else (it is made 0700); otherwise the cache is off, logged once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

FORMAT = b"dnsd-parse-cache 1\n"
RACY_S = 1.0  # a file changed this recently is not cached
MAX_ENTRIES = 4096  # beyond this, the oldest entries are removed when one is written
_DIGEST = 32

Key = tuple[int, int, int, int, int]  # st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns


def key_of(st: os.stat_result) -> Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def default_dir() -> Path | None:
    """The cache directory this process uses by default (see the module docstring); None: no cache."""
    env = os.environ.get("DNSD_CACHE_DIR")
    if env is not None:
        return None if env.strip() in ("", "off") else Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "dnsd" / "manifests"
    home = os.environ.get("HOME")
    if home and os.access(home, os.W_OK):
        return Path(home) / ".cache" / "dnsd" / "manifests"
    return Path(tempfile.gettempdir()) / f"dnsd-{os.geteuid()}" / "manifests"


def usable(directory: Path) -> bool:
    """Create the directory (0700) if needed; whether it is ours and writable by nobody else."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = directory.lstat()
    except OSError as exc:
        log.warning("%s: parse cache off: %s", directory, exc.strerror or exc)
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        log.warning("%s: parse cache off: not a directory of this user writable by nobody else", directory)
        return False
    return True


_fingerprint: bytes | None = None


def fingerprint() -> bytes:
    """A digest of what decides the cached bytes: the reading code, the model, the library versions."""
    global _fingerprint
    if _fingerprint is None:
        import yaml

        from dnsd.sources import fastyaml, files, manifests
        from dnsd.store import model

        h = hashlib.sha256(FORMAT)
        for module in (manifests, fastyaml, files, model, sys.modules[__name__]):
            h.update(Path(module.__file__ or "").read_bytes())
        h.update(f"{sys.version}|{yaml.__version__}|{fastyaml.VERSION}".encode())
        _fingerprint = h.digest()
    return _fingerprint


def _entry(directory: Path, path: Path) -> Path:
    return directory / (hashlib.sha256(os.fsencode(str(path))).hexdigest()[:40] + ".bin")


def _header(path: Path, key: Key) -> bytes:
    ident = f"{path}\0{key}".encode("utf-8", "surrogateescape")
    return FORMAT + fingerprint() + hashlib.sha256(ident).digest()


def load(directory: Path, path: Path, key: Key) -> bytes | None:
    """The byte stream cached for path with this key; None: a miss."""
    try:
        with open(_entry(directory, path), "rb") as f:
            data = f.read()
    except OSError:
        return None
    head = _header(path, key)
    if not data.startswith(head) or len(data) < len(head) + _DIGEST:
        return None
    digest = data[len(head) : len(head) + _DIGEST]
    body = data[len(head) + _DIGEST :]
    if hashlib.blake2b(body, digest_size=_DIGEST).digest() != digest:
        return None
    return body


def store(directory: Path, path: Path, key: Key, body: bytes, now_ns: int, racy_s: float = RACY_S) -> bool:
    """Keep body for path with this key (unless the file changed within racy_s); whether it was written."""
    if now_ns - max(key[3], key[4]) < racy_s * 1e9:
        return False
    digest = hashlib.blake2b(body, digest_size=_DIGEST).digest()
    target = _entry(directory, path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(_header(path, key) + digest)
            f.write(body)
        os.replace(tmp, target)
    except OSError as exc:
        log.debug("%s: parse cache entry not written: %s", target, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False
    return True


def prune(directory: Path, keep: int = MAX_ENTRIES) -> int:
    """Remove the oldest entries beyond keep (and temporary files a killed writer left); return how many."""
    try:
        entries = [(e.stat().st_mtime_ns, e.path, e.name) for e in os.scandir(directory) if e.is_file()]
    except OSError:
        return 0
    removed = 0
    old = time.time_ns() - 600 * 10**9  # a temporary file this old belongs to no writer still running
    stale = [p for m, p, name in entries if name.startswith(".") and name.endswith(".tmp") and m < old]
    live = sorted((m, p) for m, p, name in entries if name.endswith(".bin"))
    for p in stale + [p for _, p in live[: max(0, len(live) - keep)]]:
        with contextlib.suppress(OSError):
            os.unlink(p)
            removed += 1
    return removed
