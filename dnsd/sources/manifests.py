"""Reading one manifest file: YAML or JSON, multi-document, `kind: List`, into model objects with their lines.

Per object, not per file: each object of ours (dnsd.store.model: core v1 Namespace, Service, Endpoints, Pod and
discovery.k8s.io/v1 EndpointSlice) is converted on its own. An invalid one is that object's error, reported as
`PATH:LINE: reason`, and the rest of the file is applied; the file source keeps the object's last good version
from the same file when its identity (kind, namespace, name) can be read, and when it cannot, none of the objects
the file served before is withdrawn until it is fixed (Parsed.resolve). Objects that are not ours (other kinds,
other API groups, slices without a service-name label) are counted and logged at debug level.

The whole file is the error, and its previous objects keep serving, only when it cannot be read as YAML or JSON at
all: over MAX_FILE_BYTES, not decodable (YAML 1.2 section 5.2: UTF-8, UTF-16 or UTF-32, found by BOM or by the
null-byte pattern of the first character), a syntax error, nesting deeper than libyaml's limit (1000) or than
Python's recursion limit for JSON. Every exception a file can cause becomes that file's error, with its path.

Reading is the YAML 1.1 of Kubernetes' Go writer, with three allowances on top of PyYAML's safe loader: a plain
`=` is the string "=" (not the YAML 1.1 `value` type PyYAML cannot build), a tag dnsd does not know is read as
the untagged value, and an unquoted date that is not a real date stays a string.
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dnsd.errors import ManifestError
from dnsd.sources import fastyaml
from dnsd.store.model import KubeObject, ObjectKey, Skipped, convert, describe, identity, object_key

log = logging.getLogger(__name__)

# A bigger file is refused before it is read. 3,000 services with 3,000 slices take 2.6 MB of YAML (about 430
# bytes an object, more with managedFields), so 64 MiB holds any real dump and bounds the memory of one parse.
MAX_FILE_BYTES = 64 * 1024 * 1024
# Warnings (dropped hostnames) logged per file and parse; the rest are counted in one line, so a slice of 1000
# bad hostnames cannot flood the log.
MAX_WARNINGS_PER_FILE = 20

Located = tuple[KubeObject, int]  # (object, 1-based line of its document or list item)

_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C loader: about 10 times faster


class _Loader(_Base):  # type: ignore[misc]
    """The safe loader with the allowances of the module docstring."""


def _construct_equals(loader: Any, node: yaml.Node) -> Any:
    # Go's YAML writer emits `=` unquoted (CRD schemas, env values); YAML 1.1 resolves it to the `value` type.
    return loader.construct_scalar(node)


def _construct_unknown(loader: Any, node: yaml.Node) -> Any:
    # Kubernetes objects never carry tags; a tag in an object dnsd does not use must not cost the file.
    if isinstance(node, yaml.MappingNode):
        return loader.construct_yaml_map(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_yaml_seq(node)
    return loader.construct_scalar(node)


def _construct_timestamp(loader: Any, node: yaml.ScalarNode) -> Any:
    try:
        value: datetime.date = yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except ValueError:  # `2024-13-45` matches YAML 1.1's timestamp pattern but is no date
        return loader.construct_scalar(node)
    return value


_Loader.add_constructor("tag:yaml.org,2002:value", _construct_equals)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)
_Loader.add_constructor(None, _construct_unknown)


@dataclass(frozen=True, slots=True)
class ObjectError:
    """One invalid object (or document) of a file that was otherwise read."""

    key: ObjectKey | None  # the object's identity when it can be read, else None
    line: int
    message: str  # "PATH:LINE: reason"


@dataclass(frozen=True, slots=True)
class Parsed:
    objects: tuple[Located, ...] | None  # the good objects; None when the file as a whole is bad
    error: str = ""  # why the file is bad ("PATH[:LINE]: reason"), when objects is None
    errors: tuple[ObjectError, ...] = ()  # invalid objects; the rest of the file is in objects
    skipped: int = 0  # objects that are not ours (logged at debug level)

    def resolve(self, previous: Sequence[Located]) -> tuple[tuple[Located, ...], list[str]]:
        """What the file serves now, given what it served before, and one report per invalid object.

        An invalid object whose identity is known keeps its previous version (if the file had one and no valid
        object of the same identity follows). When an invalid object's identity cannot be read, it may be any
        of the file's previous objects, so none of them is withdrawn until the file is fixed."""
        good = list(self.objects or ())
        have = {object_key(obj) for obj, _ in good}
        by_key = {object_key(obj): (obj, line) for obj, line in previous}
        unknown = any(err.key is None for err in self.errors)
        kept: set[ObjectKey] = set()
        for key, located in by_key.items():
            if key in have:
                continue
            if unknown or any(err.key == key for err in self.errors):
                good.append(located)
                kept.add(key)
        reports: list[str] = []
        for err in self.errors:
            if err.key is None:
                fate = "no object the file served before is withdrawn until it is fixed"
            elif err.key in kept:
                fate = f"the last good {describe(err.key)} keeps serving"
            elif err.key in have:
                fate = f"a later valid {describe(err.key)} in the file is served"
            else:
                fate = f"{describe(err.key)} is not served"
            reports.append(f"{err.message} ({fate})")
        return tuple(good), reports


class _FileError(Exception):
    """The file as a whole cannot be read; the message is the full report."""


def parse_file(path: Path, fast: bool = False) -> Parsed:
    """Read one file: its good objects, one error per invalid object, or an error for the whole file.

    fast: try dnsd.sources.fastyaml first (only in the parse worker processes, see there); a file it cannot vouch
    for, or one with any invalid object, is read with PyYAML, so every report is PyYAML's."""
    try:
        return _parse(path, fast)
    except _FileError as exc:
        return Parsed(None, str(exc))
    except RecursionError:
        return Parsed(None, f"{path}: not valid: nested too deeply")
    except MemoryError:
        return Parsed(None, f"{path}: not valid: out of memory while reading it")
    except Exception as exc:  # whatever a library raises is this file's error, never the source's
        return Parsed(None, f"{path}: cannot read: {type(exc).__name__}: {exc}")


def _parse(path: Path, fast: bool = False) -> Parsed:
    text = _decode(path, _read(path))
    notes: list[tuple[int, str, tuple[Any, ...]]] = []
    if fast:
        docs = fastyaml.json_documents(text) if path.suffix == ".json" else fastyaml.yaml_documents(text)
        if docs is not None:
            result = _build(path, docs, notes)
            if not result.errors:
                _emit(notes)
                return result
            notes.clear()
    result = _build(path, _load(path, text), notes)
    _emit(notes)
    return result


def _emit(notes: list[tuple[int, str, tuple[Any, ...]]]) -> None:
    for level, msg, args in notes:
        log.log(level, msg, *args)


def _build(path: Path, docs: list[Document], notes_out: list[tuple[int, str, tuple[Any, ...]]]) -> Parsed:
    """The objects of the documents; what it would log goes to notes_out (logged once the reading is chosen)."""
    out: list[Located] = []
    errors: list[ObjectError] = []
    skipped = 0
    warned = 0
    debug = log.isEnabledFor(logging.DEBUG)
    for data, lines in docs:
        if isinstance(data, ObjectError):
            errors.append(data)
            continue
        if data is None:
            continue
        if not isinstance(data, Mapping):
            errors.append(ObjectError(None, lines[0], f"{path}:{lines[0]}: a manifest must be a mapping, not "
                                      f"{type(data).__name__}"))  # fmt: skip
            continue
        items: list[tuple[Any, int]]
        kind = data.get("kind")
        hint: dict[str, Any] = {}
        if isinstance(kind, str) and kind.endswith("List") and "items" in data:
            raw_items = data.get("items") or []
            if not isinstance(raw_items, list):
                errors.append(ObjectError(None, lines[0], f"{path}:{lines[0]}: items must be a list"))
                continue
            item_lines = lines[1:] + [lines[0]] * (len(raw_items) - len(lines) + 1)
            items = list(zip(raw_items, item_lines, strict=False))
            if kind != "List":
                # `kubectl get services -o json` and the API print a ServiceList whose items carry no kind and
                # no apiVersion: those of the list apply.
                hint = {"kind": kind[: -len("List")], "apiVersion": data.get("apiVersion")}
        else:
            items = [(data, lines[0])]
        for item, line in items:
            if not isinstance(item, Mapping):
                errors.append(ObjectError(None, line, f"{path}:{line}: a list item must be a mapping"))
                continue
            if hint and "kind" not in item:
                item = {**hint, **item}
            notes: list[str] = []
            try:
                obj = convert(item, notes)
            except ManifestError as exc:
                errors.append(ObjectError(identity(item), line, f"{path}:{line}: {exc}"))
                continue
            except (ValueError, TypeError, AttributeError, KeyError) as exc:
                # A value of a shape no converter expects (a key that is not a string, ...): the object's error.
                errors.append(ObjectError(identity(item), line, f"{path}:{line}: invalid object: {exc}"))
                continue
            for note in notes:
                warned += 1
                if warned <= MAX_WARNINGS_PER_FILE:
                    notes_out.append((logging.WARNING, "%s:%d: %s", (path, line, note)))
            if isinstance(obj, Skipped):
                skipped += 1
                if debug:
                    notes_out.append((logging.DEBUG, "%s:%d: skipped: %s", (path, line, obj.reason)))
            else:
                out.append((obj, line))
    if warned > MAX_WARNINGS_PER_FILE:
        more = warned - MAX_WARNINGS_PER_FILE
        notes_out.append((logging.WARNING, "%s: %d more warnings like the above", (path, more)))
    return Parsed(tuple(out), errors=tuple(errors), skipped=skipped)


def _read(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(MAX_FILE_BYTES + 1) if size <= MAX_FILE_BYTES else b""
    except OSError as exc:
        code = errno.errorcode.get(exc.errno or 0)
        raise _FileError(f"{path}: cannot read: {exc.strerror or exc}" + (f" ({code})" if code else "")) from None
    if size > MAX_FILE_BYTES or len(data) > MAX_FILE_BYTES:
        raise _FileError(f"{path}: {max(size, len(data))} bytes; files over {MAX_FILE_BYTES} bytes are not read")
    return data


def _encoding(data: bytes) -> tuple[str, int]:
    """(codec, BOM length) by YAML 1.2 section 5.2: a BOM, or the null bytes around the first character."""
    if data.startswith(b"\x00\x00\xfe\xff"):
        return "utf-32-be", 4
    if data.startswith(b"\xff\xfe\x00\x00"):
        return "utf-32-le", 4
    if data.startswith(b"\xfe\xff"):
        return "utf-16-be", 2
    if data.startswith(b"\xff\xfe"):
        return "utf-16-le", 2
    if data.startswith(b"\xef\xbb\xbf"):
        return "utf-8", 3
    if len(data) >= 4 and data[:3] == b"\x00\x00\x00":
        return "utf-32-be", 0
    if len(data) >= 4 and data[1:4] == b"\x00\x00\x00":
        return "utf-32-le", 0
    if len(data) >= 2 and data[0] == 0:
        return "utf-16-be", 0
    if len(data) >= 2 and data[1] == 0:
        return "utf-16-le", 0
    return "utf-8", 0


def _decode(path: Path, data: bytes) -> str:
    codec, bom = _encoding(data)
    try:
        return data[bom:].decode(codec)
    except UnicodeDecodeError as exc:
        start = bom + exc.start
        line = data[bom:start].decode(codec, errors="replace").count("\n") + 1
        name = codec.upper().replace("-LE", "").replace("-BE", "")
        bad = data[start : start + min(4, exc.end - exc.start)].hex(" ")
        raise _FileError(
            f"{path}:{line}: not valid {name}: bytes {bad} at offset {start} ({exc.reason}); "
            "YAML and JSON files must be UTF-8, UTF-16 or UTF-32"
        ) from None


Document = tuple[Any, list[int]]  # (data or ObjectError, [line of the document, lines of its `items`...])


def _load(path: Path, text: str) -> list[Document]:
    try:
        return _documents(path, text)
    except yaml.YAMLError as exc:
        if path.suffix == ".json":
            try:
                return [(json.loads(text), [1])]
            except json.JSONDecodeError as jexc:
                raise _FileError(f"{path}:{jexc.lineno}: not valid JSON: {jexc.msg}") from None
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise _FileError(f"{path}{where}: not valid YAML: {problem}") from None


def _documents(path: Path, text: str) -> list[Document]:
    """Every document with its lines (1-based). A document that parses but cannot be built (a bad explicit
    tag, an unhashable key) is that document's error; a syntax error anywhere raises (the file's error)."""
    loader = _Loader(text)
    out: list[Document] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            lines = [node.start_mark.line + 1]
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if getattr(key, "value", None) == "items" and isinstance(value, yaml.SequenceNode):
                        lines += [n.start_mark.line + 1 for n in value.value]
            try:
                data = loader.construct_document(node)
            except (yaml.YAMLError, ValueError, TypeError, RecursionError) as exc:
                _reset(loader)
                reason = getattr(exc, "problem", None) or str(exc)
                out.append((ObjectError(_node_identity(node), lines[0], f"{path}:{lines[0]}: {reason}"), lines))
                continue
            out.append((data, lines))
    finally:
        loader.dispose()
    return out


def _reset(loader: Any) -> None:
    """Forget a failed document's half-built state, so the next document is built from scratch."""
    loader.constructed_objects = {}
    loader.recursive_objects = {}
    loader.state_generators = []
    loader.deep_construct = False


def _node_identity(node: yaml.Node) -> ObjectKey | None:
    """The identity of a document that could not be built, read from its scalars (kind, metadata.name, ...)."""

    def scalars(n: yaml.Node) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode):
                    null = isinstance(v, yaml.ScalarNode) and v.tag == "tag:yaml.org,2002:null"
                    out[k.value] = None if null else v.value if isinstance(v, yaml.ScalarNode) else v
        return out

    top = scalars(node)
    meta = top.get("metadata")
    doc = {**top, "metadata": scalars(meta) if isinstance(meta, yaml.Node) else None}
    return identity(doc)
