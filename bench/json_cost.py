"""Cost of parsing one media message: ``json.loads`` against ``bounded_json.loads``.

Every carrier stream (Twilio, Telnyx, Plivo, Exotel) sends a JSON text per 20 ms frame
(50 a second per call), parsed with :func:`antiphon.protocols.bounded_json.loads`, which
bounds the nesting depth before ``json.loads`` can recurse. Timed here per message, in
one process, best of ``--repeats`` runs of ``--number`` parses each:

- ``json.loads``: the parse alone, no bound (the floor);
- ``scan + json.loads``: the depth scan over the whole text, then the parse (how
  ``bounded_json.loads`` worked before: :func:`~antiphon.protocols.bounded_json.nesting_depth`
  on every message);
- ``bounded_json.loads``: the bound as it is now (bracket count first; the scan only
  when a message has more opening brackets than the depth allowed);
- the same two on a deep-but-allowed message (20 arrays side by side, depth 3), where
  the scan still runs.

    .venv/bin/python bench/json_cost.py [--number 100000] [--repeats 5]

Prints a table and writes ``bench/results/json_cost.json``.
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from antiphon.protocols import bounded_json

MAX_DEPTH = 8  # EdgeLimits.max_json_depth
# a Twilio media message as it arrives: 20 ms of mu-law (160 bytes) in base64
MEDIA = json.dumps(
    {
        "event": "media",
        "sequenceNumber": "4211",
        "media": {
            "track": "inbound",
            "chunk": "4210",
            "timestamp": "84200",
            "payload": base64.b64encode(bytes(range(96, 256))).decode(),
        },
        "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0",
    },
    separators=(",", ":"),
)
SHALLOW_MANY = json.dumps({"event": "mark", "items": [[1, 2], [3, 4]] * 10})


def per_call_us(fn: Callable[[], Any], number: int, repeats: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeats)) / number * 1e6


def scan_then_parse(text: str) -> Any:
    """``bounded_json.loads`` as it was: the depth scan on every message, then the parse."""
    if bounded_json.nesting_depth(text, MAX_DEPTH) > MAX_DEPTH:
        raise bounded_json.JSONTooDeep(text[:20])
    return json.loads(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--number", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="bench/results/json_cost.json")
    a = ap.parse_args()
    cases = {
        "media: json.loads": lambda: json.loads(MEDIA),
        "media: scan + json.loads (before)": lambda: scan_then_parse(MEDIA),
        "media: bounded_json.loads (now)": lambda: bounded_json.loads(MEDIA, max_depth=MAX_DEPTH),
        "20 arrays: json.loads": lambda: json.loads(SHALLOW_MANY),
        "20 arrays: bounded_json.loads": lambda: bounded_json.loads(
            SHALLOW_MANY, max_depth=MAX_DEPTH
        ),
    }
    results = {name: per_call_us(fn, a.number, a.repeats) for name, fn in cases.items()}
    for name, us in results.items():
        print(f"{name:<36} {us:6.2f} us/message")
    before = results["media: scan + json.loads (before)"]
    now = results["media: bounded_json.loads (now)"]
    print(f"media message: {before / now:.1f}x faster than before")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "json_cost",
                "machine": platform.platform(),
                "python": platform.python_version(),
                "media_message_bytes": len(MEDIA),
                "number": a.number,
                "repeats": a.repeats,
                "us_per_message": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
