"""Reading one manifest file: YAML or JSON, multi-document, `kind: List`, into model objects with their lines."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dnsd.errors import ManifestError
from dnsd.store.model import KubeObject, object_from

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class Parsed:
    objects: tuple[tuple[KubeObject, int], ...] | None  # (object, line); None when the file is bad
    error: str = ""


def parse_file(path: Path) -> Parsed:
    """Read one file; every object must be valid or the whole file counts as bad."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Parsed(None, f"{path}: cannot read: {exc}")
    try:
        docs = list(_documents(text))
    except yaml.YAMLError as exc:
        if path.suffix == ".json":
            try:
                docs = [(json.loads(text), [1])]
            except json.JSONDecodeError as jexc:
                return Parsed(None, f"{path}:{jexc.lineno}: not valid JSON: {jexc.msg}")
        else:
            mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or str(exc)
            return Parsed(None, f"{path}{where}: not valid YAML: {problem}")
    out: list[tuple[KubeObject, int]] = []
    for data, lines in docs:
        if data is None:
            continue
        if not isinstance(data, Mapping):
            return Parsed(None, f"{path}:{lines[0]}: a manifest must be a mapping, not {type(data).__name__}")
        items: list[tuple[Any, int]]
        kind_hint: str
        if isinstance(data.get("kind"), str) and data["kind"].endswith("List") and "items" in data:
            raw_items = data.get("items") or []
            if not isinstance(raw_items, list):
                return Parsed(None, f"{path}:{lines[0]}: items must be a list")
            item_lines = lines[1:] + [lines[0]] * (len(raw_items) - len(lines) + 1)
            items = list(zip(raw_items, item_lines, strict=False))
            kind_hint = data["kind"][: -len("List")]
        else:
            items = [(data, lines[0])]
            kind_hint = ""
        for item, line in items:
            if not isinstance(item, Mapping):
                return Parsed(None, f"{path}:{line}: a list item must be a mapping")
            if "kind" not in item and kind_hint:
                # `kubectl get services -o yaml` prints a ServiceList whose items carry no kind.
                item = {**item, "kind": kind_hint}
            try:
                obj = object_from(item)
            except ManifestError as exc:
                return Parsed(None, f"{path}:{line}: {exc}")
            if obj is not None:
                out.append((obj, line))
    return Parsed(tuple(out))


def _documents(text: str) -> Iterator[tuple[Any, list[int]]]:
    """(document, [line of the document, lines of its `items` entries...]) with 1-based lines."""
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            lines = [node.start_mark.line + 1]
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if getattr(key, "value", None) == "items" and isinstance(value, yaml.SequenceNode):
                        lines += [n.start_mark.line + 1 for n in value.value]
            yield loader.construct_document(node), lines
    finally:
        loader.dispose()
