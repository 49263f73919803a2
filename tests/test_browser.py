"""The operators' side in a real browser: Playwright for Python driving Debian's Chromium against a live server.

Never `playwright install`: the tests launch the system's `chromium` (`.ci/run` installs it with apt-get)
and skip, saying why, when it or the playwright package is missing. The run also refreshes the
README's screenshots in queues/static/queues/screenshots/.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import shutil
from pathlib import Path

import pytest
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from queues import services
from queues.models import Queue, QueueSnapshot
from queues.services.maintenance import stats_snapshot
from tests.factories import QueueFactory, UserFactory

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "correct horse battery staple"  # UserFactory's
SCREENSHOTS = Path(__file__).resolve().parent.parent / "queues" / "static" / "queues" / "screenshots"

if sync_playwright is None:
    MISSING = "playwright is not installed: pip install -r requirements/dev.txt"
elif CHROMIUM is None:
    MISSING = "no chromium on PATH: apt-get install -y chromium (.ci/run does)"
else:
    MISSING = ""
# In CI a missing browser is a failure (see the `browser` fixture), not a quiet skip.
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(bool(MISSING) and not IN_CI, reason=MISSING or "-"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture(scope="module")
def _orm_beside_playwright():
    """Playwright's sync API runs an event loop in this thread; let the ORM calls around it through."""
    before = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if before is None:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = before


@pytest.fixture(scope="module")
def browser(_orm_beside_playwright):
    if MISSING:
        pytest.fail(f"CI must run the browser tests: {MISSING}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1200, "height": 800})
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


def _log_in(page, username: str, *, next_path: str = "/admin/dashboard/") -> None:
    page.goto(f"/admin/login/?next={next_path}")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Log in").click()


def _count(page, queue: str, column: str) -> str:
    return page.locator(f'tr[data-queue="{queue}"] td[data-count="{column}"]').inner_text().strip()


def _send(queue: Queue, n: int, *, now: dt.datetime, delay: int | None = None) -> None:
    messages = [services.OutgoingMessage(body=f'{{"job": {i}}}', delay_seconds=delay) for i in range(n)]
    services.message_send(queue=queue, messages=messages, now=now)


def _to_review(queue: Queue, n: int, *, consumer: str, now: dt.datetime) -> None:
    """n messages leased by `consumer` ten minutes ago whose 30 s leases the sweep then moved to review."""
    past = now - dt.timedelta(minutes=10)
    _send(queue, n, now=past)
    services.message_receive(queue=queue, consumer=consumer, max_messages=n, visibility_timeout=30, now=past)
    services.leases_sweep(now=past + dt.timedelta(minutes=1))


def _history(queue: Queue, *, now: dt.datetime, scale: int) -> None:
    """A day of depth every ten minutes, shaped like a working day, ending two minutes ago."""
    QueueSnapshot.objects.bulk_create(
        QueueSnapshot(
            queue=queue,
            taken_at=now - dt.timedelta(minutes=2 + 10 * k),
            ready=round(scale * (1.2 + math.sin(k / 14))),
            leased=round(scale * 0.3 * (1 + math.cos(k / 9))),
            review=k % 37 // 12,
        )
        for k in range(1, 144)
    )


def _shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def test_dashboard__staff_logs_in_and_sees_the_counts(page):
    now = timezone.now()
    staff = UserFactory(staff=True)
    emails = QueueFactory(name="emails", owner=staff)
    thumbs = QueueFactory(name="thumbnails", owner=staff, requeue=True, max_receives=3)
    QueueFactory(name="webhooks", owner=staff)
    _to_review(emails, 2, consumer="mailer-1", now=now)
    _send(emails, 3, now=now - dt.timedelta(minutes=4))
    services.message_receive(queue=emails, consumer="mailer-2", max_messages=1, visibility_timeout=3600, now=now)
    _send(thumbs, 7, now=now - dt.timedelta(minutes=1))
    _send(thumbs, 2, now=now, delay=300)
    for queue, scale in ((emails, 6), (thumbs, 14)):
        _history(queue, now=now, scale=scale)
    stats_snapshot(now=now - dt.timedelta(minutes=1))

    _log_in(page, staff.username, next_path="/admin/")
    page.get_by_role("link", name="Open the queue dashboard →").click()

    page.wait_for_url("**/admin/dashboard/")
    expect(page.get_by_role("heading", name="Queue dashboard")).to_be_visible()
    assert [_count(page, "emails", c) for c in ("ready", "delayed", "leased", "review")] == ["2", "0", "1", "2"]
    assert [_count(page, "thumbnails", c) for c in ("ready", "delayed", "leased", "review")] == ["7", "2", "0", "0"]
    assert _count(page, "thumbnails", "oldest_ready").startswith("1m ")
    assert [_count(page, "webhooks", c) for c in ("ready", "review", "oldest_ready")] == ["0", "0", "—"]
    assert _count(page, "emails", "sent_last_hour") == "5"  # the real snapshot task counted what was sent
    assert page.locator("#wq-totals td[data-count=ready]").inner_text() == "9"
    review_link = page.locator('tr[data-queue="emails"] a.wq-review-link')
    assert review_link.get_attribute("href") == f"/admin/queues/reviewitem/?queue__id__exact={emails.id}"
    _shot(page, "dashboard.png")


def test_dashboard__chart_renders_its_data_points(page):
    now = timezone.now()
    staff = UserFactory(staff=True)
    queue = QueueFactory(name="jobs", owner=staff)
    for hours, ready, leased, review in ((18, 4, 1, 0), (12, 9, 3, 1), (6, 2, 2, 1), (1, 5, 0, 2)):
        QueueSnapshot.objects.create(
            queue=queue, taken_at=now - dt.timedelta(hours=hours), ready=ready, leased=leased, review=review
        )

    _log_in(page, staff.username)

    chart = page.locator("#wq-chart svg.wq-depth")
    expect(chart).to_be_visible()
    box = chart.bounding_box()
    assert box["width"] > 600 and box["height"] > 150
    for series in ("ready", "leased", "review"):
        line = chart.locator(f'g[data-series="{series}"]')
        assert line.get_attribute("data-count") == "4"
        assert line.locator("circle.wq-point").count() == 4
        assert len(line.locator("polyline").get_attribute("points").split()) == 4
    values = [
        float(v)
        for v in chart.locator('g[data-series="ready"] circle').evaluate_all("dots => dots.map(d => d.dataset.value)")
    ]
    assert values == [4, 9, 2, 5]
    # Higher values sit higher: SVG y grows downwards.
    ys = chart.locator('g[data-series="ready"] circle').evaluate_all("dots => dots.map(d => d.cy.baseVal.value)")
    assert ys[1] < ys[3] < ys[0] < ys[2]
    assert chart.locator("text.wq-axis-title").all_text_contents() == ["time", "messages"]
    assert chart.locator("text.wq-tick").count() == 3 + 5  # 0, half and top; five times of day
    expect(page.locator('tr[data-queue="jobs"] svg.wq-sparkline')).to_be_visible()


def test_dashboard__empty_states(page):
    staff = UserFactory(staff=True)
    _log_in(page, staff.username)
    expect(page.get_by_text("No queues yet")).to_be_visible()
    QueueFactory(name="fresh", owner=staff)
    page.reload()
    expect(page.get_by_text("No snapshots yet — the scheduler records one a minute.")).to_be_visible()


def test_dashboard__non_staff_user_is_refused(page):
    QueueFactory(name="secret")
    member = UserFactory()

    _log_in(page, member.username)
    expect(page.locator(".errornote")).to_contain_text("staff account")
    assert page.locator("#wq-queues").count() == 0

    page.goto("/admin/dashboard/")
    assert "/admin/login/" in page.url
    expect(page.locator("#id_username")).to_be_visible()
    assert page.locator("#wq-queues").count() == 0


def _review_admin_registered() -> bool:
    try:
        reverse("admin:queues_reviewitem_changelist")
    except NoReverseMatch:
        return False
    return True


def test_review__operator_requeues_an_item_and_the_counts_change(page):
    if not _review_admin_registered():
        pytest.skip("the review-item admin (/admin/queues/reviewitem/) is not registered")
    now = timezone.now()
    staff = UserFactory(staff=True)
    queue = QueueFactory(name="emails", owner=staff, requeue=True, max_receives=2)
    _send(queue, 1, now=now - dt.timedelta(minutes=10))
    for minute, consumer in ((10, "worker-3"), (9, "worker-7")):  # redelivered once, then out of receives
        at = now - dt.timedelta(minutes=minute)
        services.message_receive(queue=queue, consumer=consumer, visibility_timeout=30, now=at)
    services.leases_sweep(now=now - dt.timedelta(minutes=8))
    [item_id] = queue.messages.values_list("id", flat=True)

    _log_in(page, staff.username)
    assert [_count(page, "emails", c) for c in ("ready", "review")] == ["0", "1"]

    page.locator('tr[data-queue="emails"] a.wq-review-link').click()
    assert f"queue__id__exact={queue.id}" in page.url
    page.locator("#result_list").get_by_role("link", name=str(item_id), exact=True).click()

    expect(page.locator(".field-consumer")).to_contain_text("worker-7")
    history = page.locator(".field-delivery_history")
    expect(history).to_contain_text("worker-3")
    expect(history).to_contain_text("worker-7")
    expect(history).to_contain_text("expired", ignore_case=True)
    _shot(page, "review-item.png")

    page.go_back()
    page.locator(f'input[name="_selected_action"][value="{item_id}"]').check()
    page.locator('select[name="action"]').select_option("requeue")
    page.locator('button[name="index"]').click()

    # The confirmation page changes nothing until confirmed.
    expect(page.get_by_role("heading", name="Requeue review items")).to_be_visible()
    assert queue.messages.get().status == "review"
    page.get_by_role("button", name="Yes, requeue them").click()
    expect(page.locator(".messagelist")).to_contain_text("Requeued 1 message.")

    page.goto("/admin/dashboard/")
    assert [_count(page, "emails", c) for c in ("ready", "review")] == ["1", "0"]
