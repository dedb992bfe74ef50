"""Linux recvmmsg(2)/sendmmsg(2) through ctypes: one system call per batch of datagrams instead of two per query.

On our machines a query cost about 5 us of kernel time with recvfrom/sendto, most of it system-call entry and
exit; batching takes about a fifth of that off. Per datagram the loop makes no ctypes call at all (buffers and
length fields are read and written through memoryviews): a ctypes call costs more than dnsd's own work on a hit
(bench/README.md has the figures). No maintained Python package exposes these calls (the standard library has
recvmsg but not recvmmsg), hence this small binding. Where it cannot be set up (not Linux, no libc symbol) the
listener falls back to recvfrom/sendto.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import sys
from collections.abc import Callable
from ctypes import POINTER, Structure, c_int, c_size_t, c_uint, c_uint32, c_void_p

from dnsd.observe.counts import Slot

BATCH = 128
SLOT = 4097  # one octet more than the largest query accepted (wire.MAX_QUERY_SIZE), as with recvfrom
MSG_DONTWAIT = 0x40


class _Iovec(Structure):
    _fields_ = [("iov_base", c_void_p), ("iov_len", c_size_t)]


class _Msghdr(Structure):
    _fields_ = [
        ("msg_name", c_void_p),
        ("msg_namelen", c_uint32),
        ("msg_iov", POINTER(_Iovec)),
        ("msg_iovlen", c_size_t),
        ("msg_control", c_void_p),
        ("msg_controllen", c_size_t),
        ("msg_flags", c_int),
    ]


class _Mmsghdr(Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", c_uint)]


# Where the fields read and written per datagram sit, in units of the memoryview formats used for them.
MLEN_STRIDE = ctypes.sizeof(_Mmsghdr) // ctypes.sizeof(c_uint)  # mmsghdr, in 4-octet words
MLEN_AT = _Mmsghdr.msg_len.offset // ctypes.sizeof(c_uint)
MMSG_SIZE = ctypes.sizeof(_Mmsghdr)
PORT_STRIDE = 28 // 2  # one sockaddr slot (sockaddr_in6 size), in 16-bit words
# The send slots' iov_len is written through an unsigned-long view: size_t is unsigned long on Linux.
assert ctypes.sizeof(ctypes.c_ulong) == ctypes.sizeof(c_size_t)
assert ctypes.sizeof(_Iovec) == 2 * ctypes.sizeof(c_size_t) and _Iovec.iov_len.offset == ctypes.sizeof(c_size_t)


def _libc() -> ctypes.PyDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # PyDLL keeps the GIL across the call: the calls never block (MSG_DONTWAIT), and dropping and taking
        # the GIL twice per batch would cost more than the call.
        lib = ctypes.PyDLL(None, use_errno=True)
        lib.recvmmsg.argtypes = [c_int, c_void_p, c_uint, c_int, c_void_p]
        lib.recvmmsg.restype = c_int
        lib.sendmmsg.argtypes = [c_int, c_void_p, c_uint, c_int]
        lib.sendmmsg.restype = c_int
    except (OSError, AttributeError):
        return None
    return lib


_LIB = _libc()


class BatchSocket:
    """Preallocated buffers for BATCH datagrams in and out of one UDP socket."""

    def __init__(self, sock: socket.socket) -> None:
        if _LIB is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg are not available")
        self.sock = sock
        self.fd = sock.fileno()
        self.v6 = sock.family == socket.AF_INET6
        namelen = 28 if self.v6 else 16
        n = BATCH
        self._rbuf = (ctypes.c_char * (SLOT * n))()
        self._sbuf = (ctypes.c_char * (SLOT * n))()
        self._names = (ctypes.c_char * (28 * n))()
        self._riov = (_Iovec * n)()
        self._siov = (_Iovec * n)()
        self._rmsg = (_Mmsghdr * n)()
        self._smsg = (_Mmsghdr * n)()
        self.rbase = ctypes.addressof(self._rbuf)
        self.sbase = ctypes.addressof(self._sbuf)
        self.nbase = ctypes.addressof(self._names)
        for i in range(n):
            self._riov[i].iov_base = self.rbase + i * SLOT
            self._riov[i].iov_len = SLOT
            self._siov[i].iov_base = self.sbase + i * SLOT
            for msgs, iovs in ((self._rmsg, self._riov), (self._smsg, self._siov)):
                hdr = msgs[i].msg_hdr
                hdr.msg_name = self.nbase + i * 28
                hdr.msg_namelen = namelen
                hdr.msg_iov = ctypes.pointer(iovs[i])
                hdr.msg_iovlen = 1
        size_m = ctypes.sizeof(_Mmsghdr)
        rm, sm = ctypes.addressof(self._rmsg), ctypes.addressof(self._smsg)
        # Direct views of the fields touched per datagram (attribute access through Structure is slow).
        name_at = _Mmsghdr.msg_hdr.offset + _Msghdr.msg_name.offset
        self._sname = [c_void_p.from_address(sm + i * size_m + name_at) for i in range(n)]
        self._rview = memoryview(self._rbuf).cast("B")
        self._sview = memoryview(self._sbuf).cast("B")
        self._mlen = memoryview(self._rmsg).cast("B").cast("I")  # msg_len of each received mmsghdr
        # The sockaddr slots as 16-bit words: sin_port and sin6_port are the second word of each 28-octet slot.
        self._ports = memoryview(self._names).cast("B").cast("H")
        self._nview = memoryview(self._names).cast("B")  # the sockaddr slots as octets (the sender's address)
        self._ilen = memoryview(self._siov).cast("B").cast("L")  # iov_base, iov_len pairs of the send slots
        self._rmsg_addr = rm
        self._smsg_addr = sm
        self.recvmmsg: Callable[[int, int, int, int, None], int] = _LIB.recvmmsg
        self.sendmmsg: Callable[[int, int, int, int], int] = _LIB.sendmmsg

    def source(self, i: int) -> tuple[str, int]:
        """The sender of datagram i, as socket.recvfrom would give it (for the query log)."""
        raw = ctypes.string_at(self.nbase + i * 28, 28 if self.v6 else 16)
        port = int.from_bytes(raw[2:4], "big")
        if self.v6:
            return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port)
        return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)

    def serve(
        self,
        exact: dict[bytes, Slot],
        handle: Callable[[bytes, bool, object], bytes | None],
        want_source: bool,
        rounds: int,
        cached: Callable[[bytes, bytes], bytes | None] | None = None,
    ) -> tuple[int, int]:
        """Receive and answer up to rounds x BATCH datagrams: exact-query hits from `exact` (the fast path,
        inlined), then from `cached` (the answer cache's exact replies, given the query and the sender's address
        octets), the rest through handle (Engine.handle_miss). Returns (hits of either, replies the kernel did
        not take)."""
        fd, rmsg = self.fd, self._rmsg_addr
        recvmmsg = self.recvmmsg
        nbase = self.nbase
        # Buffers and length fields through memoryviews: a ctypes call per datagram costs more than the
        # whole dict lookup, a memoryview slice costs little.
        rview, sview, mlen, ilen, ports = self._rview, self._sview, self._mlen, self._ilen, self._ports
        nview = self._nview
        addr_at, addr_len = (8, 16) if self.v6 else (4, 4)  # sin6_addr / sin_addr within the sockaddr
        sname = self._sname
        hits = unsent = 0
        for _ in range(rounds):
            n = recvmmsg(fd, rmsg, BATCH, MSG_DONTWAIT, None)
            if n <= 0:
                break
            j = 0
            moved: list[int] = []
            try:
                for i in range(n):
                    if not ports[i * PORT_STRIDE + 1]:
                        # Source port 0 (RFC 768: "no port"): only a spoofed datagram has it, and a reply to
                        # it cannot be sent (the kernel refuses port 0 with EINVAL).
                        continue
                    at = i * SLOT
                    data = rview[at : at + mlen[i * MLEN_STRIDE + MLEN_AT]].tobytes()
                    key = data[2:]
                    slot = exact.get(key)
                    if slot is not None:
                        slot.hits += 1
                        rest: bytes | None = slot.rest
                    elif cached is not None:
                        # The answer cache's exact replies (dnsd.cache): keyed like `exact`, and the sender's
                        # address octets straight from the sockaddr slot for its allow_recursion check.
                        at = i * 28 + addr_at
                        rest = cached(key, nview[at : at + addr_len].tobytes())
                    else:
                        rest = None
                    if rest is not None:
                        hits += 1
                        reply = data[:2] + rest
                    else:
                        slow = handle(data, False, self.source(i) if want_source else None)
                        if slow is None or len(slow) > SLOT:
                            continue
                        reply = slow
                    size = len(reply)
                    out = j * SLOT
                    sview[out : out + size] = reply
                    ilen[j * 2 + 1] = size
                    if j != i:  # an earlier datagram got no reply: this reply goes to datagram i's sender
                        sname[j].value = nbase + i * 28
                        moved.append(j)
                    j += 1
                if j:
                    unsent += self._send(j)
            finally:
                # The send slots point back at their own addresses, whatever happened above.
                for k in moved:
                    sname[k].value = nbase + k * 28
            if n < BATCH:
                break
        return hits, unsent

    def _send(self, j: int) -> int:
        """sendmmsg the first j send slots; returns how many replies were not sent. sendmmsg stops at the
        first message it cannot send (and returns -1 if that is the first): that one is skipped and the rest
        sent, so one unsendable reply (an address the kernel refuses) costs only itself. A full send buffer
        (EAGAIN, ENOBUFS) ends the batch: the rest would fail the same way."""
        sendmmsg, smsg, fd = self.sendmmsg, self._smsg_addr, self.fd
        start = unsent = 0
        while start < j:
            sent = sendmmsg(fd, smsg + start * MMSG_SIZE, j - start, MSG_DONTWAIT)
            if sent > 0:
                start += sent
                continue
            if sent < 0 and ctypes.get_errno() in (errno.EAGAIN, errno.ENOBUFS):
                return unsent + j - start
            unsent += 1  # message `start` was refused: skip it
            start += 1
        return unsent


def available() -> bool:
    return _LIB is not None
