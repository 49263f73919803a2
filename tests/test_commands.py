"""Maintenance commands are thin shells: each runs its service and reports counts."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
import time
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone
from django_q.models import Schedule

from queues import services
from queues.models import ApiToken, Message, Queue, ReviewDecision
from queues.schedules import SCHEDULES, schedules_setup
from queues.services.maintenance import prune
from tests import live
from tests.conftest import requires_postgres
from tests.factories import MessageFactory, QueueFactory, UserFactory

pytestmark = pytest.mark.django_db


def run(*args, **kwargs) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO(), **kwargs)
    return out.getvalue()


def _in_review(queue: Queue, count: int, *, consumer: str = "worker-1") -> list[int]:
    past = timezone.now() - dt.timedelta(hours=1)
    MessageFactory.create_batch(count, queue=queue, sent_at=past)
    services.message_receive(queue=queue, consumer=consumer, max_messages=count, now=past)
    services.leases_sweep()
    return list(Message.objects.filter(queue=queue, status="review").values_list("id", flat=True))


def test_create_token__creates_user_and_prints_a_working_key_once():
    key = run("create_token", "carol", "--name", "ci").strip()
    token = ApiToken.objects.get(user__username="carol")
    assert token.name == "ci"
    assert key.startswith("wq_") and token.digest == ApiToken.digest_of(key) and key not in token.digest
    assert services.token_authenticate(key=key) == token


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["u" * 151], "at most 150 characters"),
        (["bad name!"], "Enter a valid username"),
        ([" alice"], "Enter a valid username"),
        (["x\x00y"], "Enter a valid username"),
        (["carol", "--name", "n" * 101], "at most 100 characters"),
    ],
    ids=["long-username", "punctuation", "leading-space", "nul", "long-token-name"],
)
def test_create_token__a_name_the_models_refuse_is_an_error_and_creates_nothing(args, named):
    with pytest.raises(CommandError, match=named):
        run("create_token", *args)
    assert not get_user_model().objects.exists() and not ApiToken.objects.exists()


def test_create_token__an_inactive_user_gets_no_token_that_could_never_work():
    UserFactory(username="ghost", is_active=False)
    with pytest.raises(CommandError, match="'ghost' is inactive"):
        run("create_token", "ghost")
    assert not ApiToken.objects.exists()


def test_create_token__staff_for_an_existing_user_says_it_changed_nothing():
    UserFactory(username="alice", is_staff=False)
    err = StringIO()
    call_command("create_token", "alice", "--staff", stdout=StringIO(), stderr=err)
    assert "--staff applies to a new user only" in err.getvalue()
    assert not get_user_model().objects.get(username="alice").is_staff


def test_create_queue__validates_name_and_owner():
    UserFactory(username="dave")
    assert "Created queue 'orders'" in run("create_queue", "orders", "--owner", "dave", "--on-timeout", "requeue")
    assert Queue.objects.get(name="orders").on_timeout == "requeue"
    with pytest.raises(CommandError, match="already exists"):
        run("create_queue", "orders", "--owner", "dave")
    with pytest.raises(CommandError, match="1-80 characters"):
        run("create_queue", "bad name", "--owner", "dave")
    with pytest.raises(CommandError, match="No user"):
        run("create_queue", "other", "--owner", "nobody")
    UserFactory(username="gone", is_active=False)
    with pytest.raises(CommandError, match="User 'gone' is inactive"):
        run("create_queue", "other", "--owner", "gone")
    assert not Queue.objects.filter(name="other").exists()


def test_sweep__moves_expired_leases_and_prints_counts():
    queue = QueueFactory()
    past = timezone.now() - dt.timedelta(hours=1)
    MessageFactory.create_batch(3, queue=queue, sent_at=past)
    services.message_receive(queue=queue, max_messages=3, now=past)
    assert "Swept 3 expired leases in 1 batches: 3 to review, 0 back to ready." in run("sweep")
    assert "Swept 0 expired leases" in run("sweep")


def test_requeue_review__dry_run_changes_nothing_then_filters_apply():
    queue = QueueFactory(name="mail")
    ids_a = _in_review(queue, 3, consumer="a")
    _in_review(QueueFactory(name="other"), 2, consumer="b")
    out = run("requeue_review", "--queue", "mail", "--dry-run")
    assert "3 review items match" in out and f"#{ids_a[0]}" in out
    assert Message.objects.filter(status="review").count() == 5
    assert "Requeued 3 review items." in run("requeue_review", "--consumer", "a", "--note", "fixed bug")
    assert set(Message.objects.filter(status="ready").values_list("id", flat=True)) == set(ids_a)
    assert ReviewDecision.objects.filter(action="requeued", note="fixed bug").count() == 3
    assert "Requeued 0 review items." in run("requeue_review", "--queue", "other", "--older-than", "86400")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--queue", ""], "No queue named ''"),
        (["--queue", "nosuch"], "No queue named 'nosuch'"),
        (["--older-than", "315360001"], "--older-than must be between 0 and 315360000"),
        (["--older-than", "99999999999999999999"], "--older-than must be between"),
        (["--older-than", "-1"], "--older-than must be between"),
    ],
    ids=["blank-queue", "unknown-queue", "older-than-ten-years", "older-than-huge", "older-than-negative"],
)
@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["run", "dry-run"])
def test_requeue_review__a_bad_filter_is_an_error_before_anything_moves(args, named, dry_run):
    """A blank queue name once meant every queue; a huge age was a traceback after the catch-up sweep had run."""
    _in_review(QueueFactory(name="mail"), 2)
    past = timezone.now() - dt.timedelta(hours=1)
    MessageFactory(queue=QueueFactory(name="other"), sent_at=past)
    services.message_receive(queue=Queue.objects.get(name="other"), now=past)  # run out, never swept
    before = list(Message.objects.order_by("id").values())

    with pytest.raises(CommandError, match=named):
        run("requeue_review", *args, *dry_run)

    assert list(Message.objects.order_by("id").values()) == before


def test_requeue_review__takes_leases_run_out_since_the_last_sweep():
    queue = QueueFactory(name="mail")
    past = timezone.now() - dt.timedelta(hours=1)
    MessageFactory.create_batch(2, queue=queue, sent_at=past)
    services.message_receive(queue=queue, consumer="a", max_messages=2, now=past)  # run out, never swept
    assert "Requeued 2 review items." in run("requeue_review", "--queue", "mail")
    assert Message.objects.filter(queue=queue, status="ready").count() == 2


def test_requeue_review__dry_run_counts_leases_run_out_since_the_last_sweep():
    """The dry run shows what the real run would requeue: it too takes in the run-out leases first."""
    queue = QueueFactory(name="mail")
    past = timezone.now() - dt.timedelta(hours=1)
    MessageFactory.create_batch(2, queue=queue, sent_at=past)
    [held] = services.message_receive(queue=queue, consumer="a", max_messages=1)  # live: not in review
    services.message_receive(queue=queue, consumer="b", max_messages=1, now=past)  # run out, never swept
    out = run("requeue_review", "--queue", "mail", "--dry-run")
    assert "1 review items match" in out and "consumer=b" in out
    assert not Message.objects.filter(status="ready").exists()
    assert Message.objects.get(id=held["id"]).status == "leased"


def test_purge_queue__deletes_ready_only():
    queue = QueueFactory(name="p")
    MessageFactory.create_batch(4, queue=queue)
    services.message_receive(queue=queue, max_messages=1)
    assert "Purged 3 messages" in run("purge_queue", "p", "--yes")
    assert Message.objects.filter(queue=queue).count() == 1
    with pytest.raises(CommandError, match="No queue"):
        run("purge_queue", "missing", "--yes")


def test_purge_queue__no_answer_on_a_closed_input_is_an_error_and_deletes_nothing(monkeypatch):
    queue = QueueFactory(name="p")
    MessageFactory.create_batch(2, queue=queue)
    monkeypatch.setattr("sys.stdin", StringIO(""))  # a cron job without --yes: input() meets end of file
    with pytest.raises(CommandError, match=r"No answer .* nothing deleted"):
        run("purge_queue", "p")
    assert Message.objects.filter(queue=queue).count() == 2


def test_queue_stats__prints_a_row_per_queue():
    queue = QueueFactory(name="stats")
    MessageFactory.create_batch(2, queue=queue)
    out = run("queue_stats")
    assert "stats" in out.splitlines()[1] and out.splitlines()[1].split()[1] == "2"


def test_queue_stats__an_unknown_name_is_an_error():
    QueueFactory(name="stats")
    with pytest.raises(CommandError, match="No queue named 'nope', 'zzz'"):
        run("queue_stats", "stats", "zzz", "nope")


def test_setup_schedules__is_idempotent():
    run("setup_schedules")
    run("setup_schedules")
    assert Schedule.objects.filter(name__in=SCHEDULES).count() == len(SCHEDULES)
    assert Schedule.objects.get(name="wonderq.sweep").func == "queues.tasks.sweep"


def test_prune__deletes_old_acked_tombstones_only():
    queue = QueueFactory()
    past = timezone.now() - dt.timedelta(days=1)
    MessageFactory.create_batch(2, queue=queue, sent_at=past)
    [old] = services.message_receive(queue=queue, now=past)
    services.message_ack(queue=queue, receipts=[old["receipt"]], now=past)
    [recent] = services.message_receive(queue=queue)
    services.message_ack(queue=queue, receipts=[recent["receipt"]])
    assert "Pruned 1 acked messages" in run("prune")
    assert list(Message.objects.values_list("id", flat=True)) == [recent["id"]]
    # A retried ack inside the retention window still answers "acked".
    assert services.message_ack(queue=queue, receipts=[recent["receipt"]])[0]["status"] == "acked"


def test_prune__keeps_a_dedup_id_inside_its_window_whatever_the_acked_retention(settings):
    """The tombstone is what a repeated dedup_id is checked against: a retention shorter than the
    dedup window must not let a second copy in."""
    settings.WONDERQ_ACKED_RETENTION_SECONDS = 60
    queue = QueueFactory()
    t0 = timezone.now() - dt.timedelta(seconds=200)  # inside the 300 s window, past the 60 s retention
    [first] = services.message_send(
        queue=queue, messages=[services.OutgoingMessage(body="a", dedup_id="order-1")], now=t0
    )
    plain = services.message_send(queue=queue, messages=[services.OutgoingMessage(body="b")], now=t0)[0]
    for got in services.message_receive(queue=queue, max_messages=2, now=t0):
        services.message_ack(queue=queue, receipts=[got["receipt"]], now=t0)

    assert "Pruned 1 acked messages" in run("prune")

    assert list(Message.objects.values_list("id", flat=True)) == [first.id]
    [again] = services.message_send(queue=queue, messages=[services.OutgoingMessage(body="a", dedup_id="order-1")])
    assert (again.id, again.duplicate) == (first.id, True)
    assert plain.id != first.id
    # Once the window has passed, it goes.
    settings.WONDERQ_DEDUP_WINDOW_SECONDS = 100
    assert "Pruned 1 acked messages" in run("prune")
    assert not Message.objects.exists()


@pytest.mark.parametrize("batch", [0, -1])
def test_prune_and_sweep__a_batch_below_one_row_is_refused_not_spun_on(settings, batch):
    """Set in settings.py directly (the environment's check refuses it first): a batch of 0 would
    claim nothing on every turn, and the sweep loop would never end."""
    settings.WONDERQ_SWEEP_BATCH = batch
    queue = QueueFactory()
    past = timezone.now() - dt.timedelta(days=1)
    MessageFactory.create_batch(1, queue=queue, sent_at=past)
    services.message_receive(queue=queue, now=past)
    with pytest.raises(ValueError, match="at least 1 row"):
        services.leases_sweep()
    with pytest.raises(ValueError, match="at least 1 row"):
        prune()
    assert Message.objects.get().status == Message.Status.LEASED


def test_prune__keeps_review_decisions_unless_a_retention_is_set(settings):
    queue = QueueFactory(name="audit")
    ids = _in_review(queue, 2)
    services.review_discard(queue=queue, ids=ids, actor="olga")
    ReviewDecision.objects.update(created_at=timezone.now() - dt.timedelta(days=3650))
    assert "0 decisions" in run("prune")
    assert ReviewDecision.objects.count() == 2  # outlives the messages, by default for good
    settings.WONDERQ_DECISION_RETENTION_DAYS = 365
    assert "2 decisions" in run("prune")
    assert not ReviewDecision.objects.exists()


def test_prune_and_sweep__show_progress_per_transaction():
    queue = QueueFactory()
    past = timezone.now() - dt.timedelta(days=1)
    MessageFactory.create_batch(3, queue=queue, sent_at=past)
    received = services.message_receive(queue=queue, max_messages=3, now=past)
    services.message_ack(queue=queue, receipts=[received[0]["receipt"]], now=past)
    err = StringIO()
    call_command("sweep", "--batch-size", "1", stdout=StringIO(), stderr=err)
    assert err.getvalue().splitlines() == ["  batch 1: 1 moved so far", "  batch 2: 2 moved so far"]
    err = StringIO()
    call_command("prune", stdout=StringIO(), stderr=err)
    assert "so far: 1 acked messages" in err.getvalue()


def test_prune__walks_every_queue_tombstones():
    """Tombstones are pruned queue by queue (their index leads with the queue), in every queue."""
    past = timezone.now() - dt.timedelta(days=1)
    kept = []
    for queue in QueueFactory.create_batch(3):
        MessageFactory.create_batch(3, queue=queue, sent_at=past)
        for when in (past, past, timezone.now()):
            [got] = services.message_receive(queue=queue, now=when)
            services.message_ack(queue=queue, receipts=[got["receipt"]], now=when)
            if when is not past:
                kept.append(got["id"])
    assert "Pruned 6 acked messages" in run("prune")
    assert sorted(Message.objects.values_list("id", flat=True)) == sorted(kept)


_ROUND_TRIP = """
from django.contrib.auth import get_user_model
from queues.models import Queue
from queues.services import OutgoingMessage, message_ack, message_receive, message_send
user = get_user_model().objects.create(username="round-trip")
queue = Queue.objects.create(name="round-trip", owner=user)
message_send(queue=queue, messages=[OutgoingMessage(body="x")])
[leased] = message_receive(queue=queue)
[result] = message_ack(queue=queue, receipts=[leased["receipt"]])
print("round trip:", result["status"])
"""


_INDEXES = """
from django.db import connection
with connection.cursor() as cursor:
    found = connection.introspection.get_constraints(cursor, "queues_message")
print(" ".join(sorted(name for name, info in found.items() if info["index"])))
"""


_LEASED_INDEXES = """
from django.db import connection
with connection.cursor() as cursor:
    found = connection.introspection.get_constraints(cursor, "queues_message")
leased = (f"{name}:{','.join(info['columns'])}" for name, info in found.items() if info["index"] and "leased" in name)
print("leased indexes:", *sorted(leased))
"""


def leased_indexes(env: dict) -> list[str]:
    [line] = [
        line for line in live.manage(env, "shell", "-c", _LEASED_INDEXES).splitlines() if "leased indexes:" in line
    ]
    return line.split()[2:]


def test_migrate__0005_one_leased_index_forward_and_back(tmp_path):
    """Migration 0005 replaces the two indexes on leased messages with one on (queue, expiry, id);
    reversed, the two come back as they were."""
    with live.fresh_database(tmp_path) as url:
        env = live.project_env(url)
        live.manage(env, "migrate", "queues", "0004")
        before = leased_indexes(env)
        assert before == [
            "message_leased_idx:lease_expires_at,id",
            "message_queue_leased_idx:queue_id,lease_expires_at",
        ]
        live.manage(env, "migrate")
        assert leased_indexes(env) == ["message_leased_idx:queue_id,lease_expires_at,id"]
        live.manage(env, "migrate", "queues", "0004")
        assert leased_indexes(env) == before


_FUNCTIONS = """
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute(
        "SELECT proname, pronargs FROM pg_proc WHERE proname LIKE 'queues\\_%' ORDER BY proname, pronargs"
    )
    print("functions:", *[f"{name}/{args}" for name, args in cursor.fetchall()])
"""


_ACK_LIVE = """
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("SELECT prosrc FROM pg_proc WHERE proname = 'queues_message_ack'")
    print("ack knows live:", "'live' = ANY(p_statuses)" in cursor.fetchone()[0])
"""


def ack_knows_live(env: dict) -> bool:
    """Whether the ack function takes `live` among its statuses (migration 0011)."""
    [line] = [line for line in live.manage(env, "shell", "-c", _ACK_LIVE).splitlines() if "ack knows live:" in line]
    return line.endswith("True")


@requires_postgres
def test_migrate__receive_and_ack_functions_forward_back_and_forward(tmp_path):
    """Migrations 0006 and 0007 create receive's and ack's functions, and 0009 adds receive's
    without a token parameter (a token per message), keeping the old signature for code that
    still calls it, and 0010 the sweep's, and 0011 lets ack be asked for live leases only; reversed, they come back
    as they were and are dropped, and forward again, a message goes through send, receive and ack."""
    with live.fresh_database(tmp_path) as url:
        env = live.project_env(url)

        def functions() -> list[str]:
            [line] = [line for line in live.manage(env, "shell", "-c", _FUNCTIONS).splitlines() if "functions:" in line]
            return line.split()[1:]

        latest = [
            "queues_message_ack/5",
            "queues_message_receive/6",
            "queues_message_receive/7",
            "queues_sweep_batch/5",
        ]
        live.manage(env, "migrate")
        assert functions() == latest
        assert ack_knows_live(env)
        live.manage(env, "migrate", "queues", "0010")  # 0011 back: ack as 0007 made it
        assert functions() == latest and not ack_knows_live(env)
        live.manage(env, "migrate", "queues", "0008")
        assert functions() == ["queues_message_ack/5", "queues_message_receive/7"]
        live.manage(env, "migrate", "queues", "0005")
        assert functions() == []
        live.manage(env, "migrate")
        assert functions() == latest
        out = live.manage(env, "shell", "-c", _ROUND_TRIP)
        assert "round trip: acked" in out, out


def test_migrate__0004_forward_back_and_forward_on_a_fresh_database(tmp_path):
    """Migration 0004 drops the plain index on queue and gives tombstones one that leads with it;
    reversed, the old indexes come back. Migrating only `queues` first, before django_q's tables
    exist, must not trip the hook that registers the schedules; the full migrate registers them."""
    with live.fresh_database(tmp_path) as url:
        env = live.project_env(url)
        live.manage(env, "migrate", "queues", "0003")
        before = live.manage(env, "shell", "-c", _INDEXES).split()
        assert {"queues_message_queue_id_ad230eab", "message_acked_idx"} <= set(before)
        live.manage(env, "migrate")
        after = live.manage(env, "shell", "-c", _INDEXES).split()
        assert "queues_message_queue_id_ad230eab" not in after and "message_acked_idx" not in after
        assert "message_queue_acked_idx" in after
        names = "from django_q.models import Schedule; print(sorted(Schedule.objects.values_list('name', flat=True)))"
        assert "wonderq.sweep" in live.manage(env, "shell", "-c", names)
        live.manage(env, "migrate", "queues", "0003")
        assert live.manage(env, "shell", "-c", _INDEXES).split() == before
        live.manage(env, "migrate")
        assert live.manage(env, "shell", "-c", _INDEXES).split() == after


def test_setup_schedules__keeps_one_schedule_of_each_name_and_corrects_it():
    """django-q2 does not make a schedule's name unique: one added by hand under the same name made
    every later setup_schedules, and every migrate after it, a MultipleObjectsReturned traceback."""
    run("setup_schedules")
    original = Schedule.objects.get(name="wonderq.sweep")
    Schedule.objects.create(name="wonderq.sweep", func="queues.tasks.sweep", schedule_type=Schedule.MINUTES, minutes=1)
    Schedule.objects.filter(id=original.id).update(minutes=60)

    run("setup_schedules")
    call_command("migrate", verbosity=0)

    [kept] = Schedule.objects.filter(name="wonderq.sweep")
    assert (kept.id, kept.minutes, kept.func) == (original.id, 1, "queues.tasks.sweep")
    assert Schedule.objects.filter(name__in=SCHEDULES).count() == len(SCHEDULES)


@requires_postgres
@pytest.mark.django_db(transaction=True)
def test_setup_schedules__two_at_once_make_one_of_each(monkeypatch):
    """Two `serve` starting together each migrate. The first to create a schedule is held a moment
    (the window in which the second used to find none and create its own); they take turns."""
    from django.db import connections
    from django.db.models import QuerySet

    Schedule.objects.all().delete()
    real_create = QuerySet.create

    def slow_create(self, **kwargs):
        if self.model is Schedule:
            time.sleep(0.5)
        return real_create(self, **kwargs)

    monkeypatch.setattr(QuerySet, "create", slow_create)
    made = []

    def setup():
        try:
            made.append(schedules_setup())
        finally:
            connections.close_all()

    threads = [threading.Thread(target=setup) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(made, key=len) == [[], list(SCHEDULES)]
    assert sorted(Schedule.objects.values_list("name", flat=True)) == sorted(SCHEDULES)


def _manage_fails(env: dict, *args: str) -> str:
    """Run a command expected to stop with a CommandError; its stderr."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=live.ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, (done.stdout, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return done.stderr


_OPERATOR_COMMANDS = [
    ["queue_stats"],
    ["sweep"],
    ["prune"],
    ["create_queue", "orders", "--owner", "alice"],
    ["create_token", "alice"],
    ["requeue_review", "--queue", "orders"],
    ["purge_queue", "orders", "--yes"],
    ["setup_schedules"],
]


@pytest.mark.django_db(transaction=False)
def test_commands__on_a_database_never_migrated_say_so_in_one_line(tmp_path):
    """Each was Django's "no such table" (PostgreSQL: "relation does not exist") traceback."""
    with live.fresh_database(tmp_path) as url:
        env = live.project_env(url)
        for args in _OPERATOR_COMMANDS:
            err = _manage_fails(env, *args)
            assert "migration(s)" in err and "run `python manage.py migrate` first" in err, (args, err)


@pytest.mark.django_db(transaction=False)
def test_commands__on_a_database_an_upgrade_has_not_migrated_name_the_first_missing_migration(tmp_path):
    with live.fresh_database(tmp_path) as url:
        env = live.project_env(url)
        live.manage(env, "migrate", "-v0")
        live.manage(env, "migrate", "queues", "0010", "-v0")
        err = _manage_fails(env, "queue_stats")
        later = len([m for m in (live.ROOT / "queues" / "migrations").glob("0*.py") if m.name > "0011"])
        assert f"lacks {later} migration(s), the first queues.0011_ack_live_leases" in err, err
        live.manage(env, "migrate", "-v0")
        assert "(no queues)" in live.manage(env, "queue_stats")


def test_commands__on_a_database_that_cannot_be_reached_say_so_in_one_line(tmp_path):
    """psycopg's connection error was a traceback (the pool logs each try before it gives up)."""
    url = f"postgres://wonderq@127.0.0.1:{live.free_port()}/nowhere"
    err = _manage_fails(live.project_env(url, WONDERQ_DB_POOL_TIMEOUT="1"), "queue_stats")
    assert err.splitlines()[-1].startswith("CommandError: cannot read the database nowhere: "), err
