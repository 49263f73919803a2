"""Read-only queries behind the operators' dashboard: live counts, last-hour throughput, depth history.

The number of queries does not grow with the number of queues (their work does, a row per
queue): live counts are one `queue_counts` call (the API's own, so both show the same numbers),
and throughput and history read only the last hour / day of snapshots through the
(queue, taken_at) index, which the database sums into at most `points` time buckets per queue.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db.models import BigIntegerField, Count, Func, Sum
from django.db.models.functions import Coalesce

from queues.models import Queue, QueueSnapshot
from queues.services.queues import queue_counts

DEPTH_SERIES = ("ready", "leased", "review")


class EpochBucket(Func):
    """floor(seconds since the epoch / `seconds`): the index of the time bucket a timestamp falls in.

    Written per backend so SQLite runs its own C `strftime` rather than one of Django's
    Python date functions per row.
    """

    output_field = BigIntegerField()

    def __init__(self, expression, *, seconds: int):
        super().__init__(expression)
        self.seconds = int(seconds)

    def as_sqlite(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        return f"(CAST(strftime('%%s', {sql}) AS INTEGER) / {self.seconds})", params

    def as_postgresql(self, compiler, connection, **extra):
        sql, params = compiler.compile(self.source_expressions[0])
        # DATE_PART gives a double; EXTRACT's numeric is several times slower over a day of snapshots.
        return f"CAST(FLOOR(DATE_PART('epoch', {sql}) / {self.seconds}) AS BIGINT)", params


@dataclass(slots=True)
class DepthPoint:
    bucket: int
    at: dt.datetime
    ready: float
    leased: float
    review: float


@dataclass
class DashboardRow:
    queue: Queue
    ready: int
    delayed: int
    leased: int
    review: int
    oldest_ready_age_seconds: float | None
    sent_last_hour: int
    acked_last_hour: int
    series: list[DepthPoint] = field(default_factory=list)


def throughput_since(*, queue_ids: list[int], since: dt.datetime, now: dt.datetime) -> dict[int, dict]:
    """Messages sent and acked per queue id between `since` and `now`, summed from snapshots."""
    rows = (
        QueueSnapshot.objects.filter(queue_id__in=queue_ids, taken_at__gt=since, taken_at__lte=now)
        .values("queue_id")
        .annotate(sent=Coalesce(Sum("sent"), 0), acked=Coalesce(Sum("acked"), 0))
        .order_by()
    )
    totals = {queue_id: {"sent": 0, "acked": 0} for queue_id in queue_ids}
    for row in rows:
        totals[row["queue_id"]] = {"sent": row["sent"], "acked": row["acked"]}
    return totals


def depth_series(
    *, queue_ids: list[int], since: dt.datetime, now: dt.datetime, points: int = 144
) -> dict[int, list[DepthPoint]]:
    """Average ready / leased / review depth per queue id, in at most `points` (+1) time buckets, oldest first."""
    seconds = max(1, -(-int((now - since).total_seconds()) // points))
    # Integer sums and counts only: averaging, ordering and placing points in Python is cheaper
    # than converting thousands of decimals and timestamps read back from the database.
    rows = sorted(
        QueueSnapshot.objects.filter(queue_id__in=queue_ids, taken_at__gt=since, taken_at__lte=now)
        .annotate(bucket=EpochBucket("taken_at", seconds=seconds))
        .values_list("queue_id", "bucket")
        .annotate(n=Count("id"), **{name: Sum(name) for name in DEPTH_SERIES})
        .order_by()
    )
    first, last = since.timestamp(), now.timestamp()
    series: dict[int, list[DepthPoint]] = {queue_id: [] for queue_id in queue_ids}
    for queue_id, bucket, n, ready, leased, review in rows:
        # A point sits in the middle of its bucket, kept inside the charted window.
        at = dt.datetime.fromtimestamp(min(max(bucket * seconds + seconds / 2, first), last), tz=dt.UTC)
        series[queue_id].append(DepthPoint(bucket, at, ready / n, leased / n, review / n))
    return series


def dashboard_rows(*, now: dt.datetime, history: dt.timedelta = dt.timedelta(hours=24)) -> list[DashboardRow]:
    """Every queue, by name, with its live counts, last hour's throughput and depth history."""
    queues = list(Queue.objects.order_by("name"))
    if not queues:
        return []
    queue_ids = [queue.id for queue in queues]
    counts = queue_counts(queue_ids=queue_ids, now=now)
    throughput = throughput_since(queue_ids=queue_ids, since=now - dt.timedelta(hours=1), now=now)
    series = depth_series(queue_ids=queue_ids, since=now - history, now=now)
    return [
        DashboardRow(
            queue=queue,
            **{name: counts[queue.id][name] for name in ("ready", "delayed", "leased", "review")},
            oldest_ready_age_seconds=counts[queue.id]["oldest_ready_age_seconds"],
            sent_last_hour=throughput[queue.id]["sent"],
            acked_last_hour=throughput[queue.id]["acked"],
            series=series[queue.id],
        )
        for queue in queues
    ]


def depth_totals(rows: list[DashboardRow]) -> list[DepthPoint]:
    """The queues' depth series added up per time bucket.

    Averages add up exactly because one snapshot run records every queue at the same moment.
    """
    by_bucket: dict[int, DepthPoint] = {}
    for row in rows:
        for point in row.series:
            total = by_bucket.setdefault(
                point.bucket, DepthPoint(bucket=point.bucket, at=point.at, ready=0.0, leased=0.0, review=0.0)
            )
            total.at = max(total.at, point.at)
            total.ready += point.ready
            total.leased += point.leased
            total.review += point.review
    return [by_bucket[bucket] for bucket in sorted(by_bucket)]
