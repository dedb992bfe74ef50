"""The `dnsd query --trace` EDNS option: the walk of one query, carried as UTF-8 lines in option 65001.

Option 65001 is in the Local/Experimental range of EDNS option codes (RFC 6891 9: 65001-65534), which IANA never
assigns, so no other server gives it a meaning. The query carries it with empty data; dnsd's reply carries it in
its OPT record with the walk as data: one step a line, lines joined by "\\n".
"""

from __future__ import annotations

import struct

TRACE_OPTION = 65001
# The option's data is capped so that a traced reply stays under 16 KB: the rest of a traced reply (header,
# question, a few records, the OPT header) fits in the 4 KB left. A traced query is a debugging aid: a reply
# this size goes over TCP (the UDP reply is truncated, RFC 1035 4.2.1, and the client retries over TCP).
MAX_TRACE_BYTES = 12 * 1024
CUT_MARK = "... {} more steps cut (the walk is capped at {} octets)"

_OPT_TYPE = 41  # RFC 6891 6.1.1
_TRACE_CODE = struct.pack("!H", TRACE_OPTION)
_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")
_OPTION = struct.Struct("!HH")


def _clean(line: str) -> str:
    """One line as it travels: control characters escaped, so a name label holding "\\n" (client bytes decoded
    as latin-1) cannot split a step in two, and lone surrogates replaced, so the data is always valid UTF-8."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in line):
        line = "".join(f"\\{ord(c):03d}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in line)
    return line.encode("utf-8", "replace").decode("utf-8")


def encode_trace(lines: list[str], limit: int = MAX_TRACE_BYTES) -> bytes:
    """The option data for a walk: whole lines while they fit in `limit` octets; when some do not, the last kept
    line says how many were cut (the walk's start is what a reader needs most: the links consulted first)."""
    out: list[bytes] = []
    used = 0
    for i, line in enumerate(lines):
        raw = _clean(line).encode("utf-8")
        need = len(raw) + (1 if out else 0)
        if used + need > limit:
            return _with_cut(out, used, len(lines) - i, limit)
        out.append(raw)
        used += need
    return b"\n".join(out)


def _with_cut(out: list[bytes], used: int, cut: int, limit: int) -> bytes:
    """Drop lines from the end until the cut mark fits after them."""
    while True:
        mark = CUT_MARK.format(cut, limit).encode("utf-8")
        if used + len(mark) + (1 if out else 0) <= limit or not out:
            return b"\n".join([*out, mark])[:limit]
        last = out.pop()
        used -= len(last) + (1 if out else 0)
        cut += 1


def decode_trace(data: bytes) -> list[str]:
    """The walk from an option's data; undecodable octets are replaced, not fatal (the reader is a human)."""
    if not data:
        return []
    return data.decode("utf-8", "replace").split("\n")


def trace_option(lines: list[str], limit: int = MAX_TRACE_BYTES) -> bytes:
    """The whole option (code, length, data; RFC 6891 6.1.2) for the reply's OPT RDATA."""
    data = encode_trace(lines, limit)
    return _OPTION.pack(TRACE_OPTION, len(data)) + data


def wants_trace(query_wire: bytes) -> bool:
    """Whether a query's OPT record carries option 65001. Meant for a query that parse_query accepted (so its
    framing is known good), but never raises: anything malformed is False.

    Cheap by construction: a query without the two octets 0xFD 0xE9 anywhere cannot carry the option, and most
    queries are answered by that substring test alone; otherwise the records after the question are walked
    (queries hold at most one authority and two additional records, see wire.check_header)."""
    if _TRACE_CODE not in query_wire:
        return False
    try:
        rdata = _opt_rdata(query_wire)
    except (IndexError, struct.error):
        return False
    return rdata is not None and _has_option(rdata, TRACE_OPTION)


def _opt_rdata(data: bytes) -> bytes | None:
    """The RDATA of the query's OPT record, or None when it has none."""
    _, _, qd, an, ns, ar = _HEADER.unpack_from(data)
    off = 12
    for _ in range(qd):
        off = _skip_name(data, off) + 4
    for i in range(an + ns + ar):
        off = _skip_name(data, off)
        rtype, _, _, rdlen = _RR_FIXED.unpack_from(data, off)
        off += 10
        if off + rdlen > len(data):
            return None
        if rtype == _OPT_TYPE and i >= an + ns:
            return data[off : off + rdlen]
        off += rdlen
    return None


def _skip_name(data: bytes, off: int) -> int:
    """The offset after a name; a compression pointer (RFC 1035 4.1.4) ends it. At most 128 labels."""
    for _ in range(128):
        length = data[off]
        if length == 0:
            return off + 1
        if length >= 0xC0:
            return off + 2
        if length > 63:
            raise IndexError("bad label type")
        off += length + 1
    raise IndexError("name too long")


def _has_option(rdata: bytes, code: int) -> bool:
    """Walk the OPT RDATA's {code, length, data} options (RFC 6891 6.1.2)."""
    i = 0
    while i + 4 <= len(rdata):
        opt_code, length = _OPTION.unpack_from(rdata, i)
        if opt_code == code:
            return True
        i += 4 + length
    return False
