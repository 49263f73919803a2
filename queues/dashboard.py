"""The operators' dashboard at /admin/dashboard/: a thin admin view over `queues.services.dashboard`.

The depth chart is inline SVG laid out here, so the page needs no JavaScript and works offline.
"""

from __future__ import annotations

import datetime as dt
import math

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html_join

from queues.services.dashboard import (
    DEPTH_SERIES,
    DashboardRow,
    DepthPoint,
    dashboard_rows,
    depth_series,
    depth_totals,
    snapshots_since,
)

HISTORY = dt.timedelta(hours=24)
CHART = {"width": 960, "height": 260, "left": 56, "right": 16, "top": 16, "bottom": 40}
PER_PAGE = 50  # queues in the table
SPARK = {"width": 160, "height": 32, "left": 1, "right": 1, "top": 2, "bottom": 2}


def dashboard(request):
    """Every queue's live counts, last hour's throughput and a 24-hour depth chart.

    For staff who may view queues in the admin: the page names every queue, as the queue list does,
    and a user the queue list refuses is refused here too.
    """
    if not request.user.has_perm("queues.view_queue"):
        raise PermissionDenied
    now = timezone.now()
    since = now - HISTORY
    rows = dashboard_rows(now=now)
    selected = next((row for row in rows if str(row.queue.id) == request.GET.get("queue")), None)
    # The totals and the chart cover every queue; the table one page of them, since reading, laying
    # out and sending a sparkline per queue was most of a page view's time (about 1 s at 200 queues).
    page = Paginator(rows, PER_PAGE).get_page(request.GET.get("page"))
    charted = [*page, *([selected] if selected else [])]
    history = depth_series(queue_ids=[row.queue.id for row in charted], since=since, now=now)
    for row in charted:
        row.series = history[row.queue.id]
    series = selected.series if selected else depth_totals(since=since, now=now)
    context = {
        **admin.site.each_context(request),
        "title": "Queue dashboard",
        "now": now,
        "queues": [row.queue for row in rows],
        "rows": [_table_row(row, since=since, now=now) for row in page],
        "page": page,
        "totals": _totals(rows),
        "selected": selected,
        "may_review": request.user.has_perm("queues.view_reviewitem"),
        "chart": depth_chart(series, since=since, now=now, box=CHART, dots=True) if series else None,
        # Only read when the chart is empty: has the scheduler recorded anything lately?
        "has_snapshots": bool(series) or snapshots_since(since),
    }
    return TemplateResponse(request, "admin/queues/dashboard.html", context)


dashboard_view = admin.site.admin_view(dashboard)


def review_list_url(queue_id: int) -> str:
    """The admin's review list filtered to one queue."""
    try:
        base = reverse("admin:queues_reviewitem_changelist")
    except NoReverseMatch:  # the review admin is not registered (yet): link where it will be
        base = reverse("admin:index") + "queues/reviewitem/"
    return f"{base}?queue__id__exact={queue_id}"


def age_label(seconds: float | None) -> str:
    """'42s', '3m 12s', '2h 5m', '3d 4h'; an em dash for no ready message."""
    if seconds is None:
        return "—"
    seconds = int(seconds)
    for unit, size, sub_unit, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if seconds >= size:
            return f"{seconds // size}{unit} {seconds % size // sub_size}{sub_unit}"
    return f"{seconds}s"


def _table_row(row: DashboardRow, *, since: dt.datetime, now: dt.datetime) -> dict:
    return {
        "queue": row.queue,
        "ready": row.ready,
        "delayed": row.delayed,
        "leased": row.leased,
        "review": row.review,
        "oldest_ready": age_label(row.oldest_ready_age_seconds),
        "oldest_ready_seconds": row.oldest_ready_age_seconds,
        "sent_last_hour": row.sent_last_hour,
        "acked_last_hour": row.acked_last_hour,
        "review_url": review_list_url(row.queue.id),
        "spark": depth_chart(row.series, since=since, now=now, box=SPARK) if row.series else None,
    }


def _totals(rows: list[DashboardRow]) -> dict:
    names = ("ready", "delayed", "leased", "review", "sent_last_hour", "acked_last_hour")
    return {name: sum(getattr(row, name) for row in rows) for name in names}


def _nice_ceiling(value: float) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def depth_chart(
    points: list[DepthPoint], *, since: dt.datetime, now: dt.datetime, box: dict, dots: bool = False
) -> dict:
    """Polyline coordinates (and optionally one dot per point), ticks and labels for an SVG depth chart."""
    left, top = box["left"], box["top"]
    plot_w = box["width"] - left - box["right"]
    plot_h = box["height"] - top - box["bottom"]
    bottom = top + plot_h
    start, span = since.timestamp(), (now - since).total_seconds()
    y_max = _nice_ceiling(max((max(p.ready, p.leased, p.review) for p in points), default=0))
    # Plain float arithmetic: 50 sparklines of ~144 points each are laid out on every page view.
    xs = [left + (p.at.timestamp() - start) / span * plot_w for p in points]
    series = []
    for name in DEPTH_SERIES:
        values = [getattr(p, name) for p in points]
        ys = [bottom - value / y_max * plot_h for value in values]
        series.append(
            {
                "name": name,
                "count": len(points),
                "points": " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True)),
                "dots": _dots(name, points, xs, ys, values) if dots else "",
            }
        )
    return {
        **box,
        "plot_right": left + plot_w,
        "plot_bottom": bottom,
        "series": series,
        "y_max": y_max,
        "y_ticks": [{"y": round(bottom - v / y_max * plot_h, 1), "label": f"{v:g}"} for v in (0, y_max / 2, y_max)],
        "x_ticks": [
            {
                "x": round(left + k / 4 * plot_w, 1),
                "label": timezone.localtime(since + k * (now - since) / 4).strftime("%H:%M"),
            }
            for k in range(5)
        ],
        "x_label_y": bottom + 18,
        "axis_title_y": bottom + 34,
    }


def _dots(name: str, points: list[DepthPoint], xs: list[float], ys: list[float], values: list[float]) -> str:
    """One <circle> per data point, with its value and time; joined here, as a template loop over them is slow."""
    return format_html_join(
        "\n",
        '<circle class="wq-point" cx="{}" cy="{}" r="2.5" data-value="{}" data-at="{}">'
        "<title>{} {} at {}</title></circle>",
        (
            (
                f"{x:.1f}",
                f"{y:.1f}",
                round(v, 1),
                p.at.isoformat(),
                name,
                round(v, 1),
                timezone.localtime(p.at).strftime("%H:%M"),
            )
            for p, x, y, v in zip(points, xs, ys, values, strict=True)
        ),
    )
