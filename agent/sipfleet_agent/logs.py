"""JSON logs to stderr, one object per line, with SIP credentials scrubbed from every message."""

from __future__ import annotations

import json
import logging
import sys

from .siplog import scrub
from .status import now_iso


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": now_iso(), "level": record.levelname.lower(), "logger": record.name, "msg": scrub(record.getMessage())}
        extra = getattr(record, "fields", None)
        if extra:
            doc.update({k: (scrub(v) if isinstance(v, str) else v) for k, v in extra.items()})
        if record.exc_info:
            doc["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(doc, default=str)


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def log(logger: logging.Logger, level: int, msg: str, **fields) -> None:
    logger.log(level, msg, extra={"fields": fields})
