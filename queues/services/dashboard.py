"""Read-only queries behind the operators' dashboard: live counts, last-hour throughput, depth history.

The number of queries does not grow with the number of queues (their work does, a row per
queue): live counts are one `queue_counts` call (the API's own, so both show the same numbers),
and throughput and history read only the last hour / day of snapshots through the
(queue, taken_at) index, which the database sums into at most `points` time buckets per queue.
History is read only for the queues a page shows; the totals chart sums every queue's snapshots
per snapshot run in the database, a row per run rather than a series per queue.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db.models import BigIntegerField, Count, Func, Sum
from django.db.models.functions import Coalesce

from queues.models import Queue, QueueSnapshot
from queues.services.queues import queue_counts

DEPTH_SERIES = ("ready", "leased", "review")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_SECOND = dt.timedelta(seconds=1)


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
        # Whole seconds, rounded down as PostgreSQL's FLOOR does: strftime rounds a time's fraction to
        # the nearest millisecond first, which put 23:59:59.9996 in the next bucket.
        return f"(CAST(strftime('%%s', substr({sql}, 1, 19)) AS INTEGER) / {self.seconds})", params

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
    series: dict[int, list[DepthPoint]] = {queue_id: [] for queue_id in queue_ids}
    for queue_id, bucket, n, ready, leased, review in rows:
        series[queue_id].append(_point(bucket, seconds, since, now, n, ready, leased, review))
    return series


def _point(bucket: int, seconds: int, since: dt.datetime, now: dt.datetime, n: int, *sums: int) -> DepthPoint:
    """The average of `n` snapshots' ready, leased and review `sums`, in the middle of its bucket,
    kept inside the charted window."""
    at = min(max(bucket * seconds + seconds / 2, since.timestamp()), now.timestamp())
    ready, leased, review = (total / n for total in sums)
    return DepthPoint(bucket, dt.datetime.fromtimestamp(at, tz=dt.UTC), ready, leased, review)


def dashboard_rows(*, now: dt.datetime) -> list[DashboardRow]:
    """Every queue, by name, with its live counts and last hour's throughput; `series` is left to fill.

    A depth series per queue was most of a view's time (0.8 s of SQLite at 200 queues with a day
    of snapshots), so the caller reads it only for the rows it shows (`depth_series`).
    """
    queues = list(Queue.objects.order_by("name"))
    if not queues:
        return []
    queue_ids = [queue.id for queue in queues]
    counts = queue_counts(queue_ids=queue_ids, now=now)
    throughput = throughput_since(queue_ids=queue_ids, since=now - dt.timedelta(hours=1), now=now)
    return [
        DashboardRow(
            queue=queue,
            **{name: counts[queue.id][name] for name in ("ready", "delayed", "leased", "review")},
            oldest_ready_age_seconds=counts[queue.id]["oldest_ready_age_seconds"],
            sent_last_hour=throughput[queue.id]["sent"],
            acked_last_hour=throughput[queue.id]["acked"],
        )
        for queue in queues
    ]


def depth_totals(*, since: dt.datetime, now: dt.datetime, points: int = 144) -> list[DepthPoint]:
    """Every queue's ready / leased / review depth added up, averaged into at most `points` (+1) buckets.

    The average over a bucket of the total depth at each snapshot run. One run (`stats_snapshot`)
    records every queue at the same moment, so the database adds up each run's snapshots (a row per
    run, 1,440 a day; bucketing every snapshot there took twice as long) and the runs of a bucket
    are averaged here. Where every queue has a snapshot in every run of a bucket this is the sum of
    the queues' own averages; a queue made partway through a bucket adds only for the runs it was
    there. The buckets are depth_series's: whole seconds since the epoch, rounded down.
    """
    seconds = max(1, -(-int((now - since).total_seconds()) // points))
    runs = (
        QueueSnapshot.objects.filter(taken_at__gt=since, taken_at__lte=now)
        .values_list("taken_at")
        .annotate(**{name: Sum(name) for name in DEPTH_SERIES})
        .order_by()
    )
    sums: dict[int, list[int]] = {}
    for taken_at, *depths in runs:
        bucket = sums.setdefault((taken_at - _EPOCH) // _SECOND // seconds, [0, 0, 0, 0])
        bucket[0] += 1
        for index, depth in enumerate(depths, start=1):
            bucket[index] += depth
    return [_point(bucket, seconds, since, now, *totals) for bucket, totals in sorted(sums.items())]


def snapshots_since(since: dt.datetime) -> bool:
    """Whether any queue has a snapshot after `since`: has the scheduler run lately."""
    return QueueSnapshot.objects.filter(taken_at__gt=since).exists()
