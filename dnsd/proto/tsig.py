"""TSIG (RFC 8945) without keys: every signed query gets NOTAUTH with an unsigned BADKEY TSIG record.

dnsd has no TSIG key to configure, so every key a client signs with is unknown: RFC 8945 5.2.1 asks for RCODE 9
(NOTAUTH) and TSIG error 17 (BADKEY), and 5.3.2 for that error response to be unsigned (MAC size 0). The parsing
of the TSIG record (last in the additional section, RFC 8945 5.1) is in wire.py.
"""

from __future__ import annotations

import struct

from dnsd.proto.answer import NOTAUTH
from dnsd.proto.render import FLAG_QR, opt_record
from dnsd.proto.wire import TSIG, Query, Tsig

CLASS_ANY = 255  # a TSIG record's class (RFC 8945 4.2)
BADKEY = 17  # TSIG error: the key is not recognised (RFC 8945 5.2.1)


def badkey_record(tsig: Tsig) -> bytes:
    """The unsigned TSIG error record (RFC 8945 5.3.2): key name, algorithm, time signed and fudge copied from
    the request, MAC size 0, the original ID copied, error BADKEY, no other data. Names are not compressed."""
    rdata = tsig.algorithm + tsig.time_signed + struct.pack("!HHHHH", tsig.fudge, 0, tsig.original_id, BADKEY, 0)
    return tsig.key_name + struct.pack("!HHIH", TSIG, CLASS_ANY, 0, len(rdata)) + rdata


def badkey_reply(q: Query) -> bytes:
    """NOTAUTH for a signed query: the question echoed, RD and CD copied, AA clear (nothing was answered), the
    OPT record iff the query had one (RFC 6891 7), then the TSIG error record, last (RFC 8945 5.1)."""
    assert q.tsig is not None
    question = q.data[12 : 16 + len(q.qname_wire)]
    opt = opt_record(q.edns.do) if q.edns is not None else b""
    flags = FLAG_QR | NOTAUTH | (q.flags & 0x0100) | (q.flags & 0x0010)
    header = struct.pack("!HHHHHH", q.id, flags, 1, 0, 0, 2 if opt else 1)
    return header + question + opt + badkey_record(q.tsig)
