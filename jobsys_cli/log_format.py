"""`jobsys --log-format json`: one JSON object per log line, for log shippers. The project's
log lines name their ids as `key=value` words (`run_started run=12 attempt=1 job=... device=...`);
those become fields of the object, so job, run and worker ids are searchable. Text stays the
default."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re

FIELD = re.compile(r"(?<![\w.])([a-z_]{1,40})=(\"[^\"]*\"|'[^']*'|[^\s,;]+)")
RESERVED = frozenset({"ts", "level", "logger", "message", "exception"})
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, object] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "message": message}
        event = message.split(" ", 1)[0]
        if re.fullmatch(r"[a-z]+(_[a-z]+)+", event):
            entry["event"] = event  # run_started, heartbeat_failed...
        for key, value in FIELD.findall(message):
            if key not in RESERVED and key not in entry:
                entry[key] = value.strip("\"'")
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: int, log_format: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
