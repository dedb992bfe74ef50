"""What a supervisor hands a worker on its command line: its index, its control socket, its private HTTP socket
and, per listen address, the port of the SO_REUSEPORT group and the inherited descriptors."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dnsd.config import ListenAddress

if TYPE_CHECKING:
    from dnsd.transport.server import Shared


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One listen address as the supervisor bound it."""

    host: str
    port: int  # as configured (0: any)
    bound: int  # the port its SO_REUSEPORT group listens on
    udp: int | None = None  # inherited descriptors; None: the worker binds into the group itself (a restart)
    tcp: int | None = None

    @property
    def addr(self) -> ListenAddress:
        return ListenAddress(self.host, self.port)


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    index: int  # 0..workers-1: the slot, kept across restarts (logs and metrics name it)
    control: int  # the worker's end of a socketpair: "started" goes up it; EOF means the supervisor is gone
    http: str | None  # a unix socket for this worker's /health /ready /metrics (None: http off)
    listen: tuple[Endpoint, ...]

    def encode(self) -> str:
        return json.dumps(
            {
                "index": self.index,
                "control": self.control,
                "http": self.http,
                "listen": [[e.host, e.port, e.bound, e.udp, e.tcp] for e in self.listen],
            },
            separators=(",", ":"),
        )

    @classmethod
    def decode(cls, text: str) -> WorkerSpec:
        """The spec from `--worker`; ValueError when it is not one (only a supervisor writes it)."""
        try:
            data: Any = json.loads(text)
            listen = tuple(Endpoint(str(h), int(p), int(b), _fd(u), _fd(t)) for h, p, b, u, t in data["listen"])
            http = data["http"]
            return cls(int(data["index"]), int(data["control"]), None if http is None else str(http), listen)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"--worker: not a worker spec: {exc}") from None

    def listen_addresses(self) -> tuple[ListenAddress, ...]:
        return tuple(e.addr for e in self.listen)

    def shared(self) -> dict[ListenAddress, Shared]:
        """The listen sockets: the inherited pairs (the first start) or the ports to join (a restart)."""
        from dnsd.transport.server import Shared  # here: the command line imports this module, not the server

        out: dict[ListenAddress, Shared] = {}
        for e in self.listen:
            pair = None
            if e.udp is not None and e.tcp is not None:
                pair = (socket.socket(fileno=e.udp), socket.socket(fileno=e.tcp))
            out[e.addr] = Shared(e.bound, pair)
        return out


def _fd(value: Any) -> int | None:
    return None if value is None else int(value)
