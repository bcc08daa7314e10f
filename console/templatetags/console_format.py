"""Filters the console's figures are written with: ages and rates, short."""
from __future__ import annotations

from datetime import datetime, timedelta

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def age(since: datetime | None) -> str:
    """How long ago `since` was: "42 s", "3 min 5 s", "2 h 10 min", "3 d 4 h"."""
    return "" if since is None else duration(timezone.now() - since)


@register.filter
def duration(length: timedelta) -> str:
    """`length` as age writes it (a negative one as 0 s)."""
    seconds = max(0, int(length.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


@register.filter
def percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f} %"
