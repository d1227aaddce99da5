"""A minimal Server-Sent Events reader for tests and benchmarks (what an EventSource does)."""

import json
import time
from dataclasses import dataclass

import requests


@dataclass
class Event:
    event: str
    data: dict
    id: str | None
    at: float  # time.perf_counter() when it arrived


def events(url: str, headers: dict, last_event_id: str | None = None, timeout: float = 120):
    """Yield events until the stream ends; comments (keep-alives) are skipped."""
    headers = {**headers, **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
        response.raise_for_status()
        fields: dict[str, str] = {}
        # chunk_size=None: hand over whatever has arrived, so each event is seen as soon as it is sent
        for line in response.iter_lines(decode_unicode=True, chunk_size=None):
            if line:
                if not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                continue
            if "data" in fields:
                yield Event(fields.get("event", "message"), json.loads(fields["data"]), fields.get("id"),
                            time.perf_counter())
            fields = {}
