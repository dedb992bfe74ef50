"""Who may recurse: the `allow_recursion` networks, checked once per client address and remembered."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

MEMO_SIZE = 4096  # client addresses whose verdict is remembered; beyond it the memo starts afresh (bounded)


class ClientAcl:
    """allow_recursion: clients outside these networks get REFUSED for names we are not authoritative for, and
    no cached or upstream answer (a closed resolver, RFC 5358)."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(c, strict=False) for c in networks]
        self._memo: dict[str, bool] = {}
        self.packed_memo: dict[bytes, bool] = {}

    def allowed(self, client: tuple[str, int] | None) -> bool:
        if client is None:
            return False
        host = client[0]
        verdict = self._memo.get(host)
        if verdict is None:
            verdict = self._check(host)
            if len(self._memo) >= MEMO_SIZE:
                self._memo.clear()
            self._memo[host] = verdict
        return verdict

    def allowed_packed(self, packed: bytes) -> bool:
        """As allowed(), for an address as its 4 or 16 octets (straight from a sockaddr: no text on the way)."""
        verdict = self.packed_memo.get(packed)
        if verdict is None:
            try:
                verdict = self._check(str(ipaddress.ip_address(packed)))
            except ValueError:
                verdict = False
            if len(self.packed_memo) >= MEMO_SIZE:
                self.packed_memo.clear()
            self.packed_memo[packed] = verdict
        return verdict

    def _check(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)
