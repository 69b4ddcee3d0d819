"""Numbers, sizes and times as Ollama prints them (its ``format`` package).

Pure functions; the config blob's ``model_type`` uses ``human_number``, so its output
is part of the on-disk format, not just presentation.
"""

from __future__ import annotations

import math
import time

THOUSAND, MILLION, BILLION = 1_000, 1_000_000, 1_000_000_000
BYTE_UNITS = ((10**12, "TB"), (10**9, "GB"), (10**6, "MB"), (10**3, "KB"))


def human_number(n: int) -> str:
    """``8.0B``-style counts: whole values lose their decimals (``8B``), billions keep
    one decimal, millions two, thousands none."""
    if n >= BILLION:
        return _scaled(n / BILLION, 1, "B")
    if n >= MILLION:
        return _scaled(n / MILLION, 2, "M")
    if n >= THOUSAND:
        return f"{n / THOUSAND:.0f}K"
    return str(n)


def _scaled(value: float, decimals: int, suffix: str) -> str:
    if value == math.floor(value):
        decimals = 0
    return f"{value:.{decimals}f}{suffix}"


def human_bytes(n: int) -> str:
    """Decimal units; values of 10 or more are truncated to an integer (``999 MB``),
    smaller ones keep one decimal unless whole (``1.5 KB``, ``2 GB``)."""
    for scale, unit in BYTE_UNITS:
        if n >= scale:
            value = n / scale
            if value >= 10 or value == math.trunc(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{n} B"


def _human_duration(seconds_f: float) -> str:
    seconds = int(seconds_f)
    if seconds < 1:
        return "Less than a second"
    if seconds == 1:
        return "1 second"
    if seconds < 60:
        return f"{seconds} seconds"
    minutes = int(seconds_f / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = math.floor(seconds_f / 3600 + 0.5)  # Go rounds halves away from zero
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{hours // 24 // 365} years"


def human_time(timestamp: float, now: float | None = None) -> str:
    """``ollama list``'s MODIFIED column: "2 hours ago", "About a minute ago"."""
    delta = (time.time() if now is None else now) - timestamp
    if delta < 0:
        return _human_duration(-delta) + " from now"
    return _human_duration(delta) + " ago"
