"""The fast path of manifest reading: yaml_rs (Rust) and the C JSON scanner, used only where they read like PyYAML.

manifests.py reads with PyYAML's safe loader (YAML 1.1, libyaml), which builds about 3 MB of manifests a second.
yaml_rs (saphyr, YAML 1.2 core schema) builds the same Python values about ten times faster, and json's C scanner
faster still. The two YAML versions read some plain scalars differently (YAML 1.1 `yes`/`on`/`off`/`no` are
booleans, `0777` is octal, `1:20` is sexagesimal, `2024-01-01` a date; YAML 1.2 `1e3` is a float, `0o17` an int;
1.1 has merge keys `<<`), so a text is read here only when a scan (one C regex search) finds none of those, nor
tags, anchors, aliases, explicit keys, directives, document end markers, tabs, control characters, the line
breaks only YAML 1.1 knows (NEL, LS, PS), surrogate escapes, a flow collection used as a key, or block nesting
deep enough to matter (saphyr recurses per level and would overflow the stack where libyaml stops at 1000). What
remains is read alike by both (tests/unit/test_fastyaml.py compares them on every manifest of the test suite).

The scan has false positives (a `no` inside a block scalar, say): such a file is read by PyYAML, as before. Lines
are found without a node tree: document starts by their `---` markers (YAML 1.2 section 9.1: a marker line always
starts a document), `items` of a `kind: List` by their `- ` entries, counted against the parsed list. Anything
unexpected returns None, and the caller reads the file with PyYAML.

yaml_rs runs only in the parse worker processes (dnsd/sources/files.py): a crash in native code costs that
process, whose files are then read again with PyYAML, never the server.
"""

from __future__ import annotations

import json
import re
from typing import Any

_rs: Any
try:
    import yaml_rs as _rs
except ImportError:  # pragma: no cover - a dependency; without it every file takes PyYAML's path
    _rs = None

VERSION: str = getattr(_rs, "__version__", "none")  # part of the parse cache's fingerprint

Document = tuple[Any, list[int]]  # (data, [line of the document, lines of its `items`...]), as manifests.py

# The scan for what the two readers read differently. It must cost little next to yaml_rs (about 35 ms a MB), so
# it is a few C searches with rare leading characters, most of them over the reversed text: a plain scalar that
# matters ends at a line end, a comment, a flow indicator or `: `, and reversed, each of those is a cheap start.
_RISKY_BYTES = bytes(range(0x20, 0x7F)) + b"\n\r" + bytes(range(0x80, 0x100))  # all but controls, tabs, DEL
# Non-ASCII characters PyYAML rejects or reads as line breaks (C1 controls with NEL, LS, PS), BOMs, non-characters,
# surrogates (encoded with surrogatepass).
_RISKY_UTF8 = re.compile(rb"\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9]|\xef\xbb\xbf|\xef\xbf[\xbe\xbf]|\xed[\xa0-\xbf]")
_BOUNDARY = r"(?=[ \n\[{,:]|\Z)"  # reversed: what stands before a plain scalar (a line start, space, flow, colon)
# Reversed: YAML 1.1 booleans, .inf/.nan; sexagesimal numbers, 1.1 octal, 0x/0o/0b numbers, underscores,
# exponents, signed fractions without a leading digit.
_REV_WORDS = r"(?:sey|seY|SEY|on|oN|ON|no|nO|NO|ffo|ffO|FFO|(?:fni|fnI|FNI|nan|NaN|NAN)\.[-+]?)"
_REV_NUMBERS = (
    r"(?:[0-9_]*\.)?(?:[0-9][0-5]?:)+[0-9_]*[0-9][-+]?|[0-9_]+0[-+]?|[0-9a-fA-F_]*[xXoObB]0[-+]?"
    r"|[0-9._]*_[0-9._]*[-+]?|[0-9_]+[-+]?[eE][0-9._]*[-+]?|[0-9_]+\.[-+]"
)
_REV_TOKEN = rf"(?:(?=[sSoOnNfF]){_REV_WORDS}|(?=[0-9_])(?:{_REV_NUMBERS})){_BOUNDARY}"
_REV_RISKY = (
    re.compile(r"\n\r?[ ]*" + _REV_TOKEN),  # a value or sequence entry at a line end
    re.compile(r":" + _REV_TOKEN),  # a key
    re.compile(r"#[ ]+" + _REV_TOKEN),  # before a comment
    re.compile(r"[,\]}][ ]*" + _REV_TOKEN),  # in a flow collection
)
_INDICATORS = re.compile(r"[!&*%?<\]}\\]")
_DOC_END = re.compile(r"\n\.\.\.(?=[ \r\n]|\Z)")
_DEEP = re.compile(r"\n[ ?:-]{200}")  # saphyr recurses per level of block nesting
_DATE = re.compile(r"-(?<=[0-9]{4}-)(?<=[\n \[{,:][0-9]{4}-)[0-9]")  # YAML 1.1 timestamps
_DATE_AT_START = re.compile(r"[0-9]{4}-[0-9]")
_STARTS = "\n [{,:"


def risky(text: str) -> bool:
    """Whether text may hold something PyYAML reads otherwise than yaml_rs (see the module docstring)."""
    data = text.encode("utf-8", "surrogatepass")
    if data.translate(None, _RISKY_BYTES) or data.count(b"\r") != data.count(b"\r\n"):
        return True
    if not text.isascii() and _RISKY_UTF8.search(data):
        return True
    lines = "\n" + text  # so that the first line starts after a newline too
    if _DOC_END.search(lines) or _DEEP.search(lines) or _DATE.search(text) or _DATE_AT_START.match(text):
        return True
    for m in _INDICATORS.finditer(text):
        i = m.start()
        c = text[i]
        at_start = i == 0 or text[i - 1] in _STARTS
        if c in "!&*" and at_start:
            return True  # tags, anchors, aliases
        if c == "?" and at_start and text[i + 1 : i + 2] in ("", " ", "\n", "\r"):
            return True  # an explicit key
        if c == "%" and (i == 0 or text[i - 1] == "\n"):
            return True  # a directive
        if c == "<" and at_start and text[i + 1 : i + 2] == "<":
            return True  # a merge key
        if c in "]}" and re.match(r"[ ]*:(?:[ \r\n]|\Z)", text[i + 1 : i + 80]):
            return True  # a flow collection as a key
        if c == "\\" and re.match(r"u[dD][89a-fA-F]", text[i + 1 : i + 4]):
            return True  # a surrogate escape
    reverse = "\n" + text[::-1]  # the end of the text ends a line too
    return any(p.search(reverse) for p in _REV_RISKY)


# A document marker: `---` at the start of a line, followed by a space or the line end.
_MARKER = re.compile(r"^---(?=[ \r\n]|\Z)", re.M)
# The first line with content: not blank, not only a comment.
_CONTENT = re.compile(r"^[ ]*[^ #\r\n]", re.M)
_ITEMS = re.compile(r"^items:[ \r]*(?:#[^\n]*)?$", re.M)
_ENTRY = re.compile(r"( *)-(?=[ \r\n]|\Z)")  # matched at a line start

# JSON: what PyYAML would read otherwise than json does (surrogate escapes, YAML 1.1 line breaks).
_JSON_RISKY = re.compile(r"\\u[dD][89a-fA-F]|[\x85\u2028\u2029]")
_WS = re.compile(r"[ \t\n\r]*")


class _Unsure(Exception):
    """The fast path cannot vouch for this text: read it with PyYAML."""


def yaml_documents(text: str) -> list[Document] | None:
    """The documents of a YAML text with their lines, as manifests._documents gives them; None: use PyYAML."""
    if _rs is None or risky(text):
        return None
    marks = [m.start() for m in _MARKER.finditer(text)]
    bounds: list[tuple[int, int]] = []  # (first offset of the document's node, end of its region)
    head = _CONTENT.search(text, 0, marks[0] if marks else len(text))
    if head is not None:
        bounds.append((head.end() - 1, marks[0] if marks else len(text)))
    for i, pos in enumerate(marks):
        end = marks[i + 1] if i + 1 < len(marks) else len(text)
        eol = text.find("\n", pos, end)
        eol = end if eol < 0 else eol
        rest = text[pos + 3 : eol].strip(" \r")
        if rest and not rest.startswith("#"):
            bounds.append((pos, end))  # the node starts on the marker line
        else:
            found = _CONTENT.search(text, eol, end)
            bounds.append((found.end() - 1 if found else pos, end))
    try:
        loaded: Any = _rs.loads(text, parse_datetime=False, duplicate_key_policy=_rs.DuplicateKeyPolicy.LastWins)
    except BaseException as exc:  # YAMLDecodeError, and pyo3's PanicException (a BaseException)
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        return None
    docs: list[Any]
    if len(bounds) == 1:
        docs = [loaded]
    elif not bounds:
        if loaded is not None:
            return None
        docs = []
    elif isinstance(loaded, list) and len(loaded) == len(bounds):
        docs = loaded
    else:
        return None
    lines = _Lines(text)
    out: list[Document] = []
    try:
        for data, (start, end) in zip(docs, bounds, strict=True):
            doc_lines = [lines.at(start)]
            kind = data.get("kind") if isinstance(data, dict) else None
            items = data.get("items") if isinstance(data, dict) else None
            if isinstance(kind, str) and kind.endswith("List") and isinstance(items, list) and items:
                doc_lines += [lines.at(p) for p in _item_starts(text, start, end, len(items))]
            out.append((data, doc_lines))
    except _Unsure:
        return None
    return out


def _item_starts(text: str, start: int, end: int, count: int) -> list[int]:
    """Offsets of the nodes of a block sequence under a top-level `items:` key (kubectl's layout)."""
    keys = list(_ITEMS.finditer(text, start, end))
    if len(keys) != 1:
        raise _Unsure
    first = _CONTENT.search(text, keys[0].end(), end)
    entry = _ENTRY.match(text, first.start()) if first is not None else None
    if entry is None:
        raise _Unsure
    ind = len(entry.group(1))
    stop = re.compile(rf"^ {{0,{ind}}}(?!-(?:[ \r\n]|\Z))[^ #\r\n]", re.M).search(text, entry.start(), end)
    seq_end = stop.start() if stop is not None else end
    entries = re.compile(rf"^ {{{ind}}}-(?=[ \r\n]|\Z)", re.M).finditer(text, entry.start(), seq_end)
    out: list[int] = []
    for e in entries:
        eol = text.find("\n", e.end(), seq_end)
        eol = seq_end if eol < 0 else eol
        rest = text[e.end() : eol].strip(" \r")
        if rest and not rest.startswith("#"):
            out.append(e.start())
        else:
            found = _CONTENT.search(text, eol, seq_end)
            out.append(found.end() - 1 if found else e.start())
    if len(out) != count:
        raise _Unsure
    return out


class _Lines:
    """1-based line numbers of increasing offsets, counting newlines only once over the text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1

    def at(self, offset: int) -> int:
        if offset < self.pos:
            raise _Unsure
        self.line += self.text.count("\n", self.pos, offset)
        self.pos = offset
        return self.line


def _no_exponent(text: str) -> float:
    if "e" in text or "E" in text:
        raise _Unsure  # PyYAML reads `1e5` as a string (its float needs a dot and a signed exponent)
    return float(text)


def _no_constant(text: str) -> Any:
    raise _Unsure  # NaN, Infinity: not JSON, strings for PyYAML


_DECODER = json.JSONDecoder(parse_float=_no_exponent, parse_constant=_no_constant)


def json_documents(text: str) -> list[Document] | None:
    """The one document of a JSON text with its line and the lines of a top-level `items` array; None: use
    PyYAML (which reads JSON as YAML, as manifests.py does first)."""
    if _JSON_RISKY.search(text):
        return None
    lines = _Lines(text)
    try:
        start = _skip(text, 0)
        if start == len(text):
            return None
        offsets: list[int] = []
        if text[start] == "{":
            data, end = _json_object(text, start, offsets)
        else:
            data, end = _DECODER.raw_decode(text, start)
        if _skip(text, end) != len(text):
            return None  # more than one value: leave the reading (and the error) to PyYAML
        doc_lines = [lines.at(start)]
        kind = data.get("kind") if isinstance(data, dict) else None
        if isinstance(kind, str) and kind.endswith("List"):
            doc_lines += [lines.at(p) for p in offsets]
        return [(data, doc_lines)]
    except (_Unsure, ValueError, IndexError, RecursionError):
        return None


def _skip(text: str, pos: int) -> int:
    m = _WS.match(text, pos)
    return m.end() if m is not None else pos


def _json_object(text: str, pos: int, offsets: list[int]) -> tuple[dict[str, Any], int]:
    """The top-level object, noting where each element of its `items` array starts."""
    out: dict[str, Any] = {}
    seen_items = False
    j = _skip(text, pos + 1)
    if text[j] == "}":
        return out, j + 1
    while True:
        if text[j] != '"':
            raise _Unsure
        key, j = _DECODER.raw_decode(text, j)
        j = _skip(text, j)
        if text[j] != ":":
            raise _Unsure
        j = _skip(text, j + 1)
        value: Any
        if key == "items" and text[j] == "[":
            if seen_items:
                raise _Unsure  # PyYAML's lines would mix both arrays
            seen_items = True
            value, j = _json_array(text, j, offsets)
        else:
            value, j = _DECODER.raw_decode(text, j)
        out[key] = value
        j = _skip(text, j)
        if text[j] == ",":
            j = _skip(text, j + 1)
        elif text[j] == "}":
            return out, j + 1
        else:
            raise _Unsure


def _json_array(text: str, pos: int, offsets: list[int]) -> tuple[list[Any], int]:
    out: list[Any] = []
    j = _skip(text, pos + 1)
    if text[j] == "]":
        return out, j + 1
    while True:
        offsets.append(j)
        value, j = _DECODER.raw_decode(text, j)
        out.append(value)
        j = _skip(text, j)
        if text[j] == ",":
            j = _skip(text, j + 1)
        elif text[j] == "]":
            return out, j + 1
        else:
            raise _Unsure
