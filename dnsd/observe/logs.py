"""Log output: `log.format` text or json (one JSON object per line), the level, and `log.sample` of query lines."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

from dnsd.config import LogConfig

QUERY_LOGGER = "dnsd.query"  # the query log's logger (dnsd.engine.engine): one line per query, log.queries

# Context an error may carry (`extra={"upstream": ...}`): written as its own JSON key, and after the message in
# text, so that a log pipeline can group errors by upstream, file or object.
CONTEXT_KEYS = ("upstream", "file", "object", "zone", "listen")

# The attributes every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _utc(created: float) -> str:
    """RFC 3339 in UTC with milliseconds: what log pipelines (Loki, Elasticsearch, Cloud Logging) parse."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, msg; a query line's fields under "query"; an error's
    context keys and traceback. Values that are not JSON types are written as their text."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["error"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, separators=(",", ":"), ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The human line; context keys the message does not already name are appended as key=value."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        worker = getattr(record, "worker", None)  # a worker process's lines (workers > 1) name it
        extra = [] if worker is None else [f"worker={worker}"]
        extra += [
            f"{key}={getattr(record, key)}"
            for key in CONTEXT_KEYS
            if hasattr(record, key) and str(getattr(record, key)) not in record.message
        ]
        return f"{line} ({', '.join(extra)})" if extra else line


class Sampler(logging.Filter):
    """Keeps `rate` of the records (0..1), evenly spread: an accumulator, not a coin, so that 0.1 keeps exactly
    one line in ten and a test can count them."""

    def __init__(self, rate: float = 1.0) -> None:
        super().__init__()
        self.rate = rate
        self._seen = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.rate >= 1.0:
            return True
        # Kept when n * rate passes a whole number: computed from the count, so no rounding error builds up.
        self._seen += 1
        n = self._seen
        return int(n * self.rate + 1e-9) > int((n - 1) * self.rate + 1e-9)


class WorkerTag(logging.Filter):
    """Marks every record of a worker process (workers > 1) with its index: `worker` in JSON, `(worker=N)` in
    text, so that the interleaved lines of the workers tell apart."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


class LogSetup:
    """The root handler dnsd writes through; apply() (at start and at every reload) sets the format, the level
    and the query sample without replacing the handler, so no line is lost or doubled across a reload."""

    def __init__(self, stream: TextIO | None = None, worker: int | None = None) -> None:
        self.handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
        if worker is not None:
            self.handler.addFilter(WorkerTag(worker))
        self.sampler = Sampler()
        self.applied: LogConfig | None = None

    def apply(self, cfg: LogConfig) -> None:
        root = logging.getLogger()
        if self.handler not in root.handlers:
            for old in list(root.handlers):  # basicConfig's, or a test harness's: ours replaces them
                if isinstance(old, logging.StreamHandler) and old.stream in (sys.stderr, sys.stdout):
                    root.removeHandler(old)
            root.addHandler(self.handler)
        self.handler.setFormatter(JsonFormatter() if cfg.format == "json" else TextFormatter())
        root.setLevel(cfg.level.upper())
        # watchfiles logs every batch of file events at INFO; dnsd logs what it does with them instead.
        logging.getLogger("watchfiles").setLevel(max(logging.WARNING, root.level))
        query_log = logging.getLogger(QUERY_LOGGER)
        self.sampler.rate = cfg.sample
        if self.sampler not in query_log.filters:
            query_log.addFilter(self.sampler)
        self.applied = cfg

    def close(self) -> None:
        logging.getLogger().removeHandler(self.handler)
        logging.getLogger(QUERY_LOGGER).removeFilter(self.sampler)
