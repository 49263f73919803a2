"""The operators' dashboard: staff only, the API's counts, throughput and depth history from snapshots."""

from __future__ import annotations

import datetime as dt
from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from queues import dashboard, services
from queues.dashboard import age_label
from queues.models import Queue, QueueSnapshot
from queues.services.dashboard import depth_series, depth_totals
from queues.services.maintenance import prune
from tests.conftest import api_client_for
from tests.factories import QueueFactory, UserFactory

URL = "/admin/dashboard/"
COUNTS = ("ready", "delayed", "leased", "review")


class _DashboardTable(HTMLParser):
    """What an operator reads in the queue table: {queue name: {column: text}}."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self.links: dict[str, str] = {}
        self._queue = self._column = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-queue" in attrs:
            self._queue = attrs["data-queue"]
            self.rows[self._queue] = {}
        elif tag == "td" and self._queue and "data-count" in attrs:
            self._column = attrs["data-count"]
            self.rows[self._queue][self._column] = ""
        elif tag == "a" and self._queue and "wq-review-link" in attrs.get("class", ""):
            self.links[self._queue] = attrs["href"]

    def handle_endtag(self, tag):
        if tag == "td":
            self._column = None
        elif tag == "tr":
            self._queue = None

    def handle_data(self, data):
        if self._queue and self._column:
            self.rows[self._queue][self._column] += data.strip()


def _table(response) -> _DashboardTable:
    parser = _DashboardTable()
    parser.feed(response.content.decode())
    return parser


def _send(queue, n: int, *, now, delay: int | None = None) -> None:
    services.message_send(
        queue=queue, messages=[services.OutgoingMessage(body=f"m{i}", delay_seconds=delay) for i in range(n)], now=now
    )


def _seed_every_state(queue, *, now) -> None:
    """Ready, delayed, leased, swept into review, expired but unswept, and acked messages."""
    past = now - dt.timedelta(minutes=10)
    _send(queue, 2, now=past)  # -> review via the sweep
    services.message_receive(queue=queue, consumer="w-old", max_messages=2, visibility_timeout=30, now=past)
    services.leases_sweep(now=past + dt.timedelta(minutes=1))
    _send(queue, 1, now=past)  # -> expired lease the sweep has not seen
    services.message_receive(queue=queue, consumer="w-late", max_messages=1, visibility_timeout=60, now=past)
    _send(queue, 2, now=past)  # -> acked
    acked = services.message_receive(queue=queue, consumer="w-ok", max_messages=2, now=past)
    services.message_ack(queue=queue, receipts=[m["receipt"] for m in acked], now=past)
    _send(queue, 3, now=past)  # -> leased for an hour
    services.message_receive(queue=queue, consumer="w-slow", max_messages=3, visibility_timeout=3600, now=past)
    _send(queue, 4, now=past)  # -> ready
    _send(queue, 5, now=now, delay=600)  # -> delayed


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


def test_dashboard__anonymous_is_sent_to_login(client, db):
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=/admin/dashboard/")


def test_dashboard__non_staff_is_sent_to_login(client, user):
    client.force_login(user)
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")
    assert b"wq-queues" not in response.content


def _staff_with(client, *codenames):
    """A staff user (not a superuser) with only these permissions of the queues app, logged in."""
    user = UserFactory(is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="queues", codename__in=codenames))
    client.force_login(user)
    return client


def test_dashboard__staff_who_may_not_view_queues_are_refused_and_not_shown_the_link(client, queue):
    """The page names every queue and its counts: whom the queue list refuses, it refuses too."""
    intern = _staff_with(client)
    assert intern.get("/admin/queues/queue/").status_code == 403

    response = intern.get(URL)

    assert response.status_code == 403
    assert b"jobs" not in response.content
    assert 'href="/admin/dashboard/"' not in intern.get("/admin/").content.decode()


def test_dashboard__review_counts_link_the_review_list_only_for_who_may_view_it(client, queue):
    viewer = _staff_with(client, "view_queue")
    assert 'href="/admin/dashboard/"' in viewer.get("/admin/").content.decode()
    table = _table(viewer.get(URL))
    assert table.rows["jobs"]["review"] == "0"
    assert table.links == {}

    reviewer = _staff_with(client, "view_queue", "view_reviewitem")
    assert _table(reviewer.get(URL)).links == {"jobs": f"/admin/queues/reviewitem/?queue__id__exact={queue.id}"}


def test_dashboard__no_queues_says_so(staff_client):
    response = staff_client.get(URL)
    assert response.status_code == 200
    assert b"No queues yet" in response.content
    assert b'id="wq-queues"' not in response.content


def test_dashboard__no_snapshots_says_so(staff_client, queue):
    response = staff_client.get(URL)
    assert "No snapshots yet — the scheduler records one a minute" in response.content.decode()
    assert _table(response).rows["jobs"]["ready"] == "0"


def test_dashboard__no_snapshots_lately_points_at_the_scheduler_only_when_no_queue_has_any(staff_client, queue):
    other = QueueFactory(name="other")
    now = timezone.now()
    QueueSnapshot.objects.create(queue=queue, taken_at=now - dt.timedelta(hours=30), ready=1)  # outside 24 h
    page = staff_client.get(URL).content.decode()
    assert "No snapshots yet" in page and "Start it with" in page

    QueueSnapshot.objects.create(queue=other, taken_at=now - dt.timedelta(minutes=5), ready=1)
    assert "No snapshots yet" not in staff_client.get(URL).content.decode()
    # A queue charted alone that has none, while the scheduler runs: no hint to start it.
    single = staff_client.get(URL, {"queue": queue.id}).content.decode()
    assert "No snapshots yet" in single and "Start it with" not in single


def test_dashboard__counts_equal_the_api(staff_client, staff_user, queue, requeue_queue):
    now = timezone.now()
    for q in (queue, requeue_queue):
        _seed_every_state(q, now=now)
    QueueFactory(name="empty")
    api = api_client_for(staff_user)

    table = _table(staff_client.get(URL))

    assert set(table.rows) == {"empty", "jobs", "retry"}
    for name in ("empty", "jobs", "retry"):
        from_api = api.get(f"/api/v1/queues/{name}/").json()
        assert {c: int(table.rows[name][c]) for c in COUNTS} == {c: from_api[c] for c in COUNTS}, name
    # The expired, unswept lease counts where time has put it: review here, ready again in a requeue queue.
    assert {c: int(table.rows["jobs"][c]) for c in COUNTS} == {"ready": 4, "delayed": 5, "leased": 3, "review": 3}
    assert {c: int(table.rows["retry"][c]) for c in COUNTS} == {"ready": 7, "delayed": 5, "leased": 3, "review": 0}


def test_dashboard__oldest_ready_age_is_shown(staff_client, queue):
    _send(queue, 1, now=timezone.now() - dt.timedelta(minutes=5, seconds=3))
    row = _table(staff_client.get(URL)).rows["jobs"]
    assert row["oldest_ready"].startswith("5m ")


def test_dashboard__sent_and_acked_sum_the_last_hour_of_snapshots(staff_client, queue):
    now = timezone.now()
    for minutes, sent, acked in ((90, 100, 100), (50, 4, 1), (10, 6, 2)):
        QueueSnapshot.objects.create(queue=queue, taken_at=now - dt.timedelta(minutes=minutes), sent=sent, acked=acked)
    row = _table(staff_client.get(URL)).rows["jobs"]
    assert (row["sent_last_hour"], row["acked_last_hour"]) == ("10", "3")


def test_dashboard__each_queue_links_its_review_list(staff_client, queue):
    links = _table(staff_client.get(URL)).links
    assert links == {"jobs": f"/admin/queues/reviewitem/?queue__id__exact={queue.id}"}


def test_dashboard__chart_has_one_point_per_snapshot_bucket(staff_client, queue):
    now = timezone.now()
    other = QueueFactory(name="other")
    for hours, ready in ((20, 3), (10, 8), (1, 5)):
        for q in (queue, other):
            QueueSnapshot.objects.create(queue=q, taken_at=now - dt.timedelta(hours=hours), ready=ready, review=1)
    QueueSnapshot.objects.create(queue=queue, taken_at=now - dt.timedelta(hours=30), ready=99)  # outside 24 h

    page = staff_client.get(URL).content.decode()

    # The big chart (all queues) has dots; the sparklines only polylines.
    assert page.count('class="wq-point"') == 3 * 3
    assert page.count('data-series="ready" data-count="3"') == 3  # the chart and two sparklines
    assert 'data-value="16.0"' in page  # 8 + 8 ready at -10 h, summed over the queues
    assert "No snapshots yet" not in page

    single = staff_client.get(URL, {"queue": queue.id}).content.decode()
    assert "Depth over the last 24 hours — jobs" in single
    assert 'data-value="16.0"' not in single
    assert 'data-value="8.0"' in single


def test_dashboard__queries_do_not_grow_with_queues(staff_client, django_assert_max_num_queries):
    now = timezone.now()
    for i in range(8):
        q = QueueFactory(name=f"q{i}")
        _send(q, 2, now=now)
        QueueSnapshot.objects.create(queue=q, taken_at=now - dt.timedelta(minutes=5), ready=2)
    # Session and user, then queues, counts, throughput, the page's history and the totals' history:
    # one each whatever the number of queues.
    with django_assert_max_num_queries(7):
        assert staff_client.get(URL).status_code == 200


def test_dashboard__the_table_shows_a_page_of_queues_and_the_totals_all_of_them(staff_client):
    """A sparkline per queue is most of a page's time: the table pages, the totals and the chart's
    queue list do not."""
    now = timezone.now()
    owner = QueueFactory(name="a000").owner
    for i in range(1, 120):
        QueueFactory(name=f"a{i:03d}", owner=owner)
    _send(Queue.objects.get(name="a119"), 3, now=now)
    _send(Queue.objects.get(name="a000"), 2, now=now)

    first = staff_client.get(URL).content.decode()
    table = _table(staff_client.get(URL))
    assert list(table.rows) == [f"a{i:03d}" for i in range(50)]
    assert "Queues 1\u201350 of 120 (page 1 of 3)" in first
    assert first.count("<option value=") == 121  # every queue, and "All queues"
    totals = _DashboardTotals.of(first)
    assert (totals["heading"], totals["ready"]) == ("All 120 queues", "5")

    last = staff_client.get(URL, {"page": 3})
    assert list(_table(last).rows) == [f"a{i:03d}" for i in range(100, 120)]
    assert _table(last).rows["a119"]["ready"] == "3"
    # A page that is not one reads as the first or the last, never an error.
    for page, shown in (("abc", range(50)), ("999", range(100, 120)), ("\x00", range(50)), ("-1", range(100, 120))):
        assert list(_table(staff_client.get(URL, {"page": page})).rows) == [f"a{i:03d}" for i in shown]
    # A queue off this page can still be charted, and its link keeps the page.
    charted = staff_client.get(URL, {"queue": Queue.objects.get(name="a119").id, "page": 1}).content.decode()
    assert "Depth over the last 24 hours — a119" in charted
    assert f'href="?queue={Queue.objects.get(name="a010").id}&amp;page=1#wq-chart"' in charted


def test_dashboard__reads_depth_history_only_for_the_queues_it_shows(staff_client, monkeypatch):
    """A series per queue for every queue was 0.8 s of a view at 200 queues with a day of snapshots,
    while the table shows 50. The totals chart still adds up every queue, those off the page too."""
    now = timezone.now()
    owner = QueueFactory(name="a000").owner
    queues = [Queue.objects.get(name="a000"), *(QueueFactory(name=f"a{i:03d}", owner=owner) for i in range(1, 60))]
    QueueSnapshot.objects.bulk_create(
        QueueSnapshot(queue=q, taken_at=now - dt.timedelta(minutes=minutes), ready=1, review=2)
        for q in queues
        for minutes in (5, 65)
    )
    asked: list[list[int]] = []
    original = dashboard.depth_series

    def spy(*, queue_ids, **kwargs):
        asked.append(sorted(queue_ids))
        return original(queue_ids=queue_ids, **kwargs)

    monkeypatch.setattr(dashboard, "depth_series", spy)

    page = staff_client.get(URL).content.decode()
    assert asked == [sorted(q.id for q in queues[:50])]
    assert 'data-value="60.0"' in page and 'data-value="120.0"' in page  # ready and review, all 60 queues
    assert page.count('data-series="ready" data-count="2"') == 51  # the chart and 50 sparklines

    asked.clear()
    off_page = queues[55]
    single = staff_client.get(URL, {"queue": off_page.id, "page": 1}).content.decode()
    assert asked == [sorted([*(q.id for q in queues[:50]), off_page.id])]
    assert "Depth over the last 24 hours — a055" in single and 'data-value="60.0"' not in single


class _DashboardTotals(HTMLParser):
    """The totals row: its heading and {column: text}."""

    def __init__(self):
        super().__init__()
        self.cells: dict[str, str] = {}
        self._inside = False
        self._cell = None

    @classmethod
    def of(cls, page: str) -> dict[str, str]:
        parser = cls()
        parser.feed(page)
        return parser.cells

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and attrs.get("id") == "wq-totals":
            self._inside = True
        elif self._inside and tag == "th":
            self._cell = "heading"
        elif self._inside and tag == "td" and "data-count" in attrs:
            self._cell = attrs["data-count"]
        if self._cell:
            self.cells.setdefault(self._cell, "")

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._cell = None
        elif tag == "tr":
            self._inside = False

    def handle_data(self, data):
        if self._cell:
            self.cells[self._cell] += data.strip()


def test_depth_totals__average_each_runs_total_so_a_queue_made_mid_bucket_counts_for_its_runs(queue):
    """Summing the queues' own averages read 20 here: queue b held 10 for half of the bucket only."""
    other = QueueFactory(name="other")
    now = timezone.now()
    start = now - dt.timedelta(hours=2)
    start -= dt.timedelta(seconds=start.timestamp() % 600)  # the start of a 10-minute bucket
    for minute in range(10):
        taken_at = start + dt.timedelta(minutes=minute, seconds=30)
        QueueSnapshot.objects.create(queue=queue, taken_at=taken_at, ready=10, review=2)
        if minute >= 5:
            QueueSnapshot.objects.create(queue=other, taken_at=taken_at, ready=10, leased=4)
    since = now - dt.timedelta(hours=24)

    [total] = depth_totals(since=since, now=now)
    series = depth_series(queue_ids=[queue.id, other.id], since=since, now=now)

    assert (total.ready, total.leased, total.review) == (15.0, 2.0, 2.0)
    assert [(p.ready, p.leased, p.review) for p in series[queue.id]] == [(10.0, 0.0, 2.0)]
    assert [(p.ready, p.leased, p.review) for p in series[other.id]] == [(10.0, 4.0, 0.0)]
    assert total.bucket == series[queue.id][0].bucket and total.at == series[queue.id][0].at


@pytest.mark.parametrize("offset_us", [-300, -1, 0, 1])
def test_depth_totals__buckets_a_snapshot_by_the_bucket_depth_series_gives_it(queue, offset_us):
    """SQLite's strftime rounded 300 us before a bucket's start up into that bucket; Python rounded down."""
    now = timezone.now()
    boundary = (now - dt.timedelta(hours=3)).replace(microsecond=0)
    boundary -= dt.timedelta(seconds=boundary.timestamp() % 600)
    QueueSnapshot.objects.create(queue=queue, taken_at=boundary + dt.timedelta(microseconds=offset_us), ready=1)
    since = now - dt.timedelta(hours=24)

    [total] = depth_totals(since=since, now=now)
    [[point]] = depth_series(queue_ids=[queue.id], since=since, now=now).values()

    expected = int(boundary.timestamp()) // 600 - (1 if offset_us < 0 else 0)
    assert (total.bucket, point.bucket) == (expected, expected)


def test_snapshots_of_every_queue_by_time_are_read_through_the_time_index(queue):
    """The totals chart and prune read the whole snapshot table without it: 2,000,000 rows at 200
    queues and 7 days kept, 240 ms of SQLite for the totals."""
    now = timezone.now()
    QueueSnapshot.objects.create(queue=queue, taken_at=now - dt.timedelta(days=30), ready=1)
    QueueSnapshot.objects.create(queue=queue, taken_at=now - dt.timedelta(minutes=5), ready=1)
    with CaptureQueriesContext(connection) as ran:
        depth_totals(since=now - dt.timedelta(hours=24), now=now)
        assert prune(now=now).snapshots == 1
    reads = [q["sql"] for q in ran.captured_queries if q["sql"].startswith("SELECT") and "queuesnapshot" in q["sql"]]
    assert len(reads) == 2  # the totals, and prune's batch (shorter than a batch: the last)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")  # a table this small is read whole anyway
        for sql in reads:
            cursor.execute(("EXPLAIN " if connection.vendor == "postgresql" else "EXPLAIN QUERY PLAN ") + sql)
            plan = "\n".join(str(row[-1]) for row in cursor.fetchall())
            assert "snapshot_time_idx" in plan and "Seq Scan" not in plan, (sql, plan)
            # SQLite walks the index in time order; PostgreSQL chooses between that and a sort by its costs.
            assert "TEMP B-TREE" not in plan, (sql, plan)


def test_depth_series__averages_into_at_most_144_buckets(queue):
    now = timezone.now().replace(second=0, microsecond=0)
    QueueSnapshot.objects.bulk_create(
        QueueSnapshot(queue=queue, taken_at=now - dt.timedelta(minutes=m), ready=m, leased=1, review=2)
        for m in range(24 * 60)
    )
    [points] = depth_series(queue_ids=[queue.id], since=now - dt.timedelta(hours=24), now=now).values()
    assert 140 <= len(points) <= 145
    assert [p.at for p in points] == sorted(p.at for p in points)
    assert all(p.leased == 1 and p.review == 2 for p in points)
    # A full 10-minute bucket averages ten consecutive minutes: a mean ending in .5.
    assert any(p.ready % 1 == 0.5 and p.ready > 10 for p in points)


def test_admin_index__links_the_dashboard(staff_client):
    page = staff_client.get("/admin/").content.decode()
    assert 'href="/admin/dashboard/"' in page


@pytest.mark.parametrize(
    ("seconds", "label"),
    [(None, "—"), (0, "0s"), (59.9, "59s"), (192, "3m 12s"), (7500, "2h 5m"), (3 * 86400 + 4 * 3600, "3d 4h")],
)
def test_age_label__reads_like_a_person(seconds, label):
    assert age_label(seconds) == label
