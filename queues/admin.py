"""The operators' side: review items, the decision log, queues, live messages and API tokens.

Every state change goes through `queues.services`; the admin only selects, asks for
confirmation, calls the service and reports what the service says it moved. Bulk
actions follow Django's `delete_selected`: the first POST shows a confirmation page
and changes nothing, the second (with `post=yes`) acts, logs and reports a count.
"""

from __future__ import annotations

import json
from datetime import MAXYEAR, MINYEAR

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.exceptions import DisallowedModelAdminLookup
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import get_fields_from_path
from django.contrib.admin.views.main import ChangeList
from django.contrib.admin.widgets import AutocompleteSelect
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import ValidationError
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.text import smart_split
from django.utils.timesince import timesince
from django.utils.translation import ngettext

from queues import services
from queues.admin_forms import ApiTokenAddForm, DecisionForm, DelayedDecisionForm
from queues.models import ApiToken, Message, Queue, QueueGrant, ReviewDecision, ReviewItem
from queues.services.queues import QUEUE_FIELDS

# --- Shared helpers ----------------------------------------------------------------


def _posted_ids(request) -> set[int]:
    """The ids the operator selected, as posted; malformed ones are ignored."""
    ids = set()
    for raw in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
        try:
            ids.add(int(raw))
        except ValueError:
            continue
    return ids


CONFIRMED_IDS = "wq_confirmed_ids"


def _confirmation(modeladmin, request, *, action, title, question, rows, submit, form=None, skipped=""):
    """The page between choosing an action and doing it: lists `rows` ((object, detail) pairs) with a form."""
    opts = modeladmin.model._meta
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": title,
        "subtitle": None,
        "question": question,
        "rows": rows,
        "skipped": skipped,
        "form": form,
        "submit_label": submit,
        "action_name": action,
        "confirmed_ids_name": CONFIRMED_IDS,
        # One field, not one per item: Django refuses a form of over 1,000 fields (a "select all" of more).
        "confirmed_ids": ",".join(str(obj.pk) for obj, _ in rows),
        "opts": opts,
        "media": modeladmin.media + (form.media if form is not None else forms.Media()),
    }
    request.current_app = modeladmin.admin_site.name
    return TemplateResponse(
        request,
        [
            f"admin/{opts.app_label}/{opts.model_name}/action_confirmation.html",
            f"admin/{opts.app_label}/action_confirmation.html",
        ],
        context,
    )


def _adopt(obj, saved) -> None:
    """Turn the admin's unsaved instance into the row a service created, so logging and redirects find it."""
    for field in saved._meta.concrete_fields:
        setattr(obj, field.attname, getattr(saved, field.attname))
    obj._state.adding = False
    obj._state.db = saved._state.db


_PRE = '<pre class="wq-body" style="white-space: pre-wrap; max-height: 40em; overflow: auto">{}</pre>'


def _pretty_json(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _when(value) -> str:
    """A moment to the second: leases last seconds, so the admin's default minutes hide what happened."""
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _time_column(field: str, description: str):
    @admin.display(description=description, ordering=field)
    def column(self, obj):
        return _when(getattr(obj, field))

    column.__name__ = f"{field}_display"
    return column


class ReadOnlyMixin:
    """No add, change or delete for anyone: these rows change only through services."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# Django turns each of a date hierarchy's values into a datetime and catches only ValueError:
# a 20-digit year overflows, and year 9999 overflows when Django adds the year after. One year
# of margin at each end also keeps the bounds representable after a time-zone shift.
_DATE_PARTS = (("year", MINYEAR + 1, MAXYEAR - 1), ("month", 1, 12), ("day", 1, 31))


def _check_dates(field: str, params) -> None:
    """Out-of-range date hierarchy values answer as malformed ones do (Django's ?e=1), not with a 500."""
    for part, low, high in _DATE_PARTS:
        values = params.get(f"{field}__{part}")
        if values is None:
            continue
        try:
            value = int(values[-1])  # the value Django uses
        except ValueError as error:
            raise IncorrectLookupParameters(error) from error
        if not low <= value <= high:
            raise IncorrectLookupParameters(f"{field}__{part} is out of range")


class StrictChangeList(ChangeList):
    """A changelist that filters only through its admin's list filters and date hierarchy.

    Django applies every query-string parameter no filter consumed as a lookup on the model's own
    fields (`?body__regex=(`, `?created_at__year=99999`), and the database answers some with a 500.
    """

    def get_filters(self, request):
        params = self.get_filters_params()
        if self.date_hierarchy:
            _check_dates(self.date_hierarchy, params)
        specs, has_filters, remaining, may_have_duplicates, has_active_filters = super().get_filters(request)
        unconsumed = set(remaining)
        if self.date_hierarchy and f"{self.date_hierarchy}__year" in params:
            # The date hierarchy's year, month and day come back as these two bounds.
            unconsumed -= {f"{self.date_hierarchy}__gte", f"{self.date_hierarchy}__lt"}
        unconsumed -= self._bare_names()
        if unconsumed:
            raise DisallowedModelAdminLookup(f"Filtering by {', '.join(sorted(unconsumed))} not allowed")
        return specs, has_filters, remaining, may_have_duplicates, has_active_filters

    def _bare_names(self) -> set[str]:
        """Filtered fields by their bare name (`?review_reason=timeout`): an exact match, which links have used."""
        # Not relations: their filter links by `queue__id__exact`, and a bare `?queue=` compares an unchecked
        # id, which overflows at 20 digits. Any other lookup on a field (`__regex`, `__year`) stays refused.
        names = set()
        for item in self.list_filter:
            path = item[0] if isinstance(item, (list, tuple)) else item
            if isinstance(path, str) and not get_fields_from_path(self.model, path)[-1].is_relation:
                names.add(path)
        return names


def _is_pk(field, raw: str) -> bool:
    """Whether `raw` converts to a value of the primary key field, in its column's range."""
    try:
        field.run_validators(field.to_python(raw))
    except ValidationError:
        return False
    return True


class StrictAutocompleteSelect(AutocompleteSelect):
    """An autocomplete that redraws a malformed posted or initial id ("abc", 25 digits) as no choice, not a 500."""

    def optgroups(self, name, value, attr=None):
        target = self.field.remote_field
        key = target.model._meta.get_field(target.field_name)
        return super().optgroups(name, [v for v in value if v in (None, "") or _is_pk(key, str(v))], attr)


class StrictAutocompleteMixin:
    """The autocomplete fields of an admin or inline use StrictAutocompleteSelect."""

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if "widget" not in kwargs and db_field.name in self.get_autocomplete_fields(request):
            kwargs["widget"] = StrictAutocompleteSelect(db_field, self.admin_site, using=kwargs.get("using"))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


# Each search word is a condition ANDed to the others, and SQLite refuses an expression over 1,000
# deep (a 500 at about 1,000 words): a longer search finds nothing and says why.
MAX_SEARCH_WORDS = 50


class SearchWordsMixin:
    def get_search_results(self, request, queryset, search_term):
        if len(list(smart_split(search_term))) > MAX_SEARCH_WORDS:
            match = getattr(request, "resolver_match", None)
            if match is None or match.url_name != "autocomplete":
                self.message_user(request, f"A search takes at most {MAX_SEARCH_WORDS} words.", messages.WARNING)
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)


class StrictInputMixin(SearchWordsMixin, StrictAutocompleteMixin):
    """Malformed input answers 4xx (or Django's ?e=1) or is ignored, never a 500: every admin of the app has it."""

    def get_changelist(self, request, **kwargs):
        return StrictChangeList

    def lookup_allowed(self, lookup, value, request):
        # PostgreSQL refuses U+0000 in a query, with a 500. (Django's search form already refuses it in `q`.)
        return "\x00" not in value and super().lookup_allowed(lookup, value, request)

    def changelist_view(self, request, extra_context=None):
        # A confirmation page posts the ids it listed as one field (CONFIRMED_IDS): they are the selection.
        if request.method == "POST" and CONFIRMED_IDS in request.POST:
            request.POST = request.POST.copy()
            confirmed = [raw for raw in request.POST[CONFIRMED_IDS].split(",") if raw]
            request.POST.setlist(helpers.ACTION_CHECKBOX_NAME, confirmed)
        return super().changelist_view(request, extra_context)

    def response_action(self, request, queryset):
        # Django filters the queryset by the posted ids before the action runs, and one malformed id
        # ("abc", "²", 20 digits) is a ValueError there: drop those, so the action acts on the valid
        # ids only, and Django says "Items must be selected" when none is left.
        posted = request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        valid = [raw for raw in posted if _is_pk(self.opts.pk, raw)]
        if len(valid) < len(posted):
            request.POST = request.POST.copy()
            request.POST.setlist(helpers.ACTION_CHECKBOX_NAME, valid)
        return super().response_action(request, queryset)


class IdSearchMixin:
    """Search that also matches an integer term against `id_search_field` exactly (using its index)."""

    id_search_field = "id"

    def get_search_results(self, request, queryset, search_term):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip().lstrip("#")
        # isdigit() alone takes '²', which int() refuses: such a term is text, like any other.
        if term.isascii() and term.isdigit() and len(term) < 19:
            results |= queryset.filter(**{self.id_search_field: int(term)})
        return results, may_have_duplicates


class MessageDetailMixin:
    """Read-only renderings of a message's body, attributes and delivery history."""

    @admin.display(description="body")
    def body_display(self, obj):
        # Escaped by format_html: a body is whatever a producer sent.
        try:
            text = _pretty_json(json.loads(obj.body))
        except ValueError:
            text = obj.body
        return format_html(_PRE, text)

    @admin.display(description="attributes")
    def attributes_display(self, obj):
        return format_html(_PRE, _pretty_json(obj.attributes or {}))

    sent_at_display = _time_column("sent_at", "sent at")
    available_at_display = _time_column("available_at", "available at")
    leased_at_display = _time_column("leased_at", "leased at")
    lease_expires_at_display = _time_column("lease_expires_at", "lease expires at")
    review_at_display = _time_column("review_at", "timed out / rejected at")

    @admin.display(description="deliveries that ended without an ack")
    def delivery_history(self, obj):
        return render_to_string("admin/queues/includes/delivery_history.html", {"deliveries": obj.history()})

    @admin.display(description="age", ordering="sent_at")
    def age(self, obj):
        return timesince(obj.sent_at, timezone.now())

    @admin.display(description="consumer", ordering="consumer")
    def consumer_display(self, obj):
        return obj.consumer or "-"


class ConsumerFilter(admin.SimpleListFilter):
    """The consumer labels present in the admin's queryset; '(unnamed)' for consumers that gave none."""

    title = "consumer"
    parameter_name = "consumer"
    UNNAMED = "__unnamed__"

    def lookups(self, request, model_admin):
        labels = model_admin.get_queryset(request).order_by("consumer").values_list("consumer", flat=True).distinct()
        return [(label or self.UNNAMED, label or "(unnamed)") for label in labels]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(consumer="" if value == self.UNNAMED else value)


# --- Review items --------------------------------------------------------------------


REVIEW_ACTIONS = {
    "requeue": {
        "form": DecisionForm,
        "title": "Requeue review items",
        "question": "Put these messages back in their queues, ready to be received now?",
        "submit": "Yes, requeue them",
    },
    "requeue_later": {
        "form": DelayedDecisionForm,
        "title": "Requeue review items with a delay",
        "question": "Put these messages back in their queues, to be received after a delay?",
        "submit": "Yes, requeue them",
    },
    "discard": {
        "form": DecisionForm,
        "title": "Discard review items",
        "question": "Delete these messages? The decision is kept in the review log; the messages are not.",
        "submit": "Yes, discard them",
    },
}


_REVIEW_FIELDS = (
    "queue",
    "id",
    "review_reason",
    "review_note",
    "review_at_display",
    "consumer",
    "leased_by",
    "leased_at_display",
    "lease_expires_at_display",
    "receive_count",
)


@admin.register(ReviewItem)
class ReviewItemAdmin(StrictInputMixin, ReadOnlyMixin, IdSearchMixin, MessageDetailMixin, admin.ModelAdmin):
    """Messages waiting for an operator: who held them, when, how often; requeue or discard."""

    list_display = (
        "queue",
        "id",
        "review_reason",
        "consumer_display",
        "leased_by",
        "leased_at_display",
        "review_at_display",
        "receive_count",
        "age",
    )
    list_display_links = ("id",)
    list_filter = (("queue", admin.RelatedOnlyFieldListFilter), "review_reason", ConsumerFilter)
    list_select_related = ("queue", "leased_by")
    search_fields = ("body",)
    search_help_text = "A message id, or text in the body."
    ordering = ("-review_at", "-id")
    actions = ("requeue", "requeue_later", "discard")
    fieldsets = (
        (
            "Review",
            {"fields": _REVIEW_FIELDS},
        ),
        ("Message", {"fields": ("sent_at_display", "body_display", "attributes_display")}),
        ("Delivery history", {"fields": ("delivery_history",)}),
    )
    readonly_fields = (
        *_REVIEW_FIELDS,
        "sent_at_display",
        "body_display",
        "attributes_display",
        "delivery_history",
    )

    # Read-only (ReadOnlyMixin): a review item changes only through the actions below, which call the services.

    def has_review_permission(self, request):
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    def changelist_view(self, request, extra_context=None):
        # Leases that ran out since the last sweep are in review by time (rule 2): list them too.
        # One sweep batch at most; the scheduled sweep does the rest of a large backlog. Not for
        # a user who may not see the list: a refused request changes nothing.
        if self.has_view_or_change_permission(request):
            services.leases_sweep(max_batches=1)
        return super().changelist_view(request, extra_context)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # A lease run out since the last sweep is in review by time (rule 2): its page shows it.
        if self.has_view_or_change_permission(request) and _is_pk(self.opts.pk, object_id):
            services.leases_expire_message(message_id=int(object_id))
        actions = self.get_actions(request)
        extra_context = {
            **(extra_context or {}),
            # Each button posts to the changelist as that action, so it gets the same confirmation page.
            "review_buttons": [(name, actions[name][2]) for name in self.actions if name in actions],
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(description="Requeue", permissions=["review"])
    def requeue(self, request, queryset):
        return self._decide(request, queryset, action="requeue")

    @admin.action(description="Requeue with a delay", permissions=["review"])
    def requeue_later(self, request, queryset):
        return self._decide(request, queryset, action="requeue_later")

    @admin.action(description="Discard", permissions=["review"])
    def discard(self, request, queryset):
        return self._decide(request, queryset, action="discard")

    def _decide(self, request, queryset, *, action):
        """Confirm, then move the selected items still in review through the review services."""
        spec = REVIEW_ACTIONS[action]
        # The queryset holds only items still in review (the proxy's manager sees to that).
        items = list(queryset.select_related("queue", "leased_by").order_by("queue__name", "id"))
        requested = _posted_ids(request) | {item.pk for item in items}
        gone = len(requested) - len(items)
        if not items:
            self.message_user(request, _not_in_review(gone), messages.WARNING)
            return None
        if request.POST.get("post"):
            form = spec["form"](request.POST)
            if form.is_valid():
                moved = self._apply(request, items, action=action, **form.cleaned_data)
                self._report(request, action=action, moved=moved, skipped=len(requested) - moved, **form.cleaned_data)
                return None
        else:
            form = spec["form"]()
        return _confirmation(
            self,
            request,
            action=action,
            title=spec["title"],
            question=spec["question"],
            rows=[(item, None) for item in items],
            submit=spec["submit"],
            form=form,
            skipped=f"{_not_in_review(gone)} {_will_be_skipped(gone)}" if gone else "",
        )

    def _apply(self, request, items, *, action, note="", delay_seconds=0) -> int:
        """Call the service once per queue; only items the service reports as moved are counted and logged."""
        by_queue: dict[int, tuple[Queue, list[int]]] = {}
        for item in items:
            by_queue.setdefault(item.queue_id, (item.queue, []))[1].append(item.pk)
        moved: set[int] = set()
        for queue, ids in by_queue.values():
            if action == "discard":
                moved.update(services.review_discard(queue=queue, ids=ids, operator=request.user, note=note))
            else:
                moved.update(
                    services.review_requeue(
                        queue=queue, ids=ids, operator=request.user, delay_seconds=delay_seconds, note=note
                    )
                )
        if moved:
            if action == "discard":
                flag, status, text = DELETION, Message.Status.REVIEW, "Discarded from review."
            else:
                flag, status, text = CHANGE, Message.Status.READY, f"Requeued from review (delay {delay_seconds} s)."
            # Logged against Message so the history links to the live message, not to a gone review item.
            done = [Message(pk=item.pk, queue_id=item.queue_id, status=status) for item in items if item.pk in moved]
            LogEntry.objects.log_actions(
                user_id=request.user.pk, queryset=done, action_flag=flag, change_message=f"{text} {note}".strip()
            )
        return len(moved)

    def _report(self, request, *, action, moved, skipped, delay_seconds=0, **_):
        if action == "discard":
            text = ngettext("Discarded %(count)d message.", "Discarded %(count)d messages.", moved)
        else:
            text = ngettext("Requeued %(count)d message.", "Requeued %(count)d messages.", moved)
        text %= {"count": moved}
        if delay_seconds and moved:
            text = f"{text[:-1]}, receivable again in {delay_seconds} seconds."
        self.message_user(request, text, messages.SUCCESS if moved else messages.WARNING)
        if skipped:
            self.message_user(request, _not_in_review(skipped), messages.WARNING)


def _will_be_skipped(count: int) -> str:
    return ngettext("It will be skipped.", "They will be skipped.", count)


def _not_in_review(count: int) -> str:
    return ngettext("%(count)d was no longer in review.", "%(count)d were no longer in review.", count) % {
        "count": count
    }


# --- Decision log ----------------------------------------------------------------------


@admin.register(ReviewDecision)
class ReviewDecisionAdmin(StrictInputMixin, ReadOnlyMixin, IdSearchMixin, admin.ModelAdmin):
    """The review log: every requeue, discard and late ack, kept after the message is gone. Read-only."""

    id_search_field = "message_id"
    list_display = (
        "created_at",
        "action",
        "queue_name",
        "message_id",
        "actor",
        "delay_seconds",
        "review_reason",
        "receive_count",
        "short_note",
    )
    list_filter = ("action", "queue_name")
    search_fields = ("actor", "note")
    search_help_text = "A message id, or text in the actor or the note."
    date_hierarchy = "created_at"
    list_select_related = ()

    @admin.display(description="note")
    def short_note(self, obj):
        return obj.note if len(obj.note) <= 80 else obj.note[:79] + "…"


# --- Queues and their messages ---------------------------------------------------------


class QueueChangeList(StrictChangeList):
    """Attaches live counts to the page's queues with one queue_counts call (no query per row)."""

    def get_results(self, request):
        super().get_results(request)
        queues = list(self.result_list)  # evaluates and caches the page; the template reuses these objects
        counts = services.queue_counts(queue_ids=[queue.pk for queue in queues], now=timezone.now())
        for queue in queues:
            queue.live_counts = counts[queue.pk]


class QueueGrantInline(StrictAutocompleteMixin, admin.TabularInline):
    model = QueueGrant
    extra = 0
    autocomplete_fields = ("user",)


def _count_column(name: str):
    @admin.display(description=name)
    def column(self, obj):
        return getattr(obj, "live_counts", {}).get(name, "-")

    column.__name__ = f"{name}_count"
    return column


@admin.register(Queue)
class QueueAdmin(StrictInputMixin, admin.ModelAdmin):
    """Queues with their live counts; settings are saved through queue_create / queue_update."""

    list_display = (
        "name",
        "owner",
        "on_timeout",
        "visibility_timeout",
        "ready_count",
        "delayed_count",
        "leased_count",
        "review_count",
        "oldest_ready",
    )
    list_filter = ("on_timeout",)
    list_select_related = ("owner",)
    search_fields = ("name",)
    autocomplete_fields = ("owner",)
    inlines = (QueueGrantInline,)
    actions = ("purge_ready",)

    ready_count = _count_column("ready")
    delayed_count = _count_column("delayed")
    leased_count = _count_column("leased")
    review_count = _count_column("review")

    @admin.display(description="oldest ready")
    def oldest_ready(self, obj):
        seconds = getattr(obj, "live_counts", {}).get("oldest_ready_age_seconds")
        return "-" if seconds is None else f"{int(seconds)} s"

    def get_changelist(self, request, **kwargs):
        return QueueChangeList

    def get_readonly_fields(self, request, obj=None):
        # queue_update changes settings only; a rename would break every client of the queue.
        return ("name", "owner", "created_at", "updated_at") if obj else ()

    def has_delete_permission(self, request, obj=None):
        # Deleting a queue deletes its messages; the admin's delete page would list every one of them.
        # Delete through the API or queue_delete.
        return False

    def has_purge_permission(self, request):
        return self.has_change_permission(request)

    def save_model(self, request, obj, form, change):
        if change:
            changed = {name: getattr(obj, name) for name in QUEUE_FIELDS if name in form.changed_data}
            if changed:
                services.queue_update(queue=obj, **changed)
        else:
            created = services.queue_create(
                name=obj.name, owner=obj.owner, **{name: getattr(obj, name) for name in QUEUE_FIELDS}
            )
            _adopt(obj, created)

    @admin.action(description="Purge ready messages", permissions=["purge"])
    def purge_ready(self, request, queryset):
        queues = list(queryset.order_by("name"))
        if request.POST.get("post"):
            total = 0
            for queue in queues:
                purged = services.queue_purge(queue=queue)
                total += purged
                LogEntry.objects.log_actions(
                    user_id=request.user.pk,
                    queryset=[queue],
                    action_flag=CHANGE,
                    change_message=f"Purged {purged} ready messages.",
                )
            self.message_user(
                request,
                ngettext(
                    "Purged %(count)d ready message from %(queues)d queue(s).",
                    "Purged %(count)d ready messages from %(queues)d queue(s).",
                    total,
                )
                % {"count": total, "queues": len(queues)},
                messages.SUCCESS,
            )
            return None
        counts = services.queue_counts(queue_ids=[queue.pk for queue in queues], now=timezone.now())
        rows = [
            (queue, f"{counts[queue.pk]['ready'] + counts[queue.pk]['delayed']} ready (including delayed)")
            for queue in queues
        ]
        return _confirmation(
            self,
            request,
            action="purge_ready",
            title="Purge ready messages",
            question="Delete every ready and delayed message of these queues? Leased and review messages stay.",
            rows=rows,
            submit="Yes, purge them",
        )


class LiveStatusFilter(admin.SimpleListFilter):
    """Status choices without the acked tombstones, which the admin never shows."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [(value, label) for value, label in Message.Status.choices if value != Message.Status.ACKED]

    def queryset(self, request, queryset):
        return queryset.filter(status=self.value()) if self.value() else queryset


@admin.register(Message)
class MessageAdmin(StrictInputMixin, ReadOnlyMixin, IdSearchMixin, MessageDetailMixin, admin.ModelAdmin):
    """Live messages (acked tombstones hidden), read-only: states change only through the services."""

    list_display = (
        "id",
        "queue",
        "status",
        "available_at_display",
        "receive_count",
        "consumer_display",
        "leased_by",
        "lease_expires_at_display",
        "age",
    )
    list_filter = (LiveStatusFilter, "queue")
    list_select_related = ("queue", "leased_by")
    search_fields = ("body",)
    search_help_text = "A message id, or text in the body."
    ordering = ("-id",)
    show_full_result_count = False  # a second COUNT(*) over every message is not worth it
    fields = (
        "queue",
        "id",
        "status",
        "sent_at_display",
        "available_at_display",
        "receive_count",
        "consumer",
        "leased_by",
        "leased_at_display",
        "lease_expires_at_display",
        "review_reason",
        "review_note",
        "review_at_display",
        "body_display",
        "attributes_display",
        "delivery_history",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).live()

    def changelist_view(self, request, extra_context=None):
        # As the review list: leases run out since the last sweep are listed where time put them
        # (rule 2), so the status column and filter agree with the queues' counts.
        if self.has_view_or_change_permission(request):
            services.leases_sweep(max_batches=1)
        return super().changelist_view(request, extra_context)


# --- API tokens ------------------------------------------------------------------------


class TokenStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("expired", "Expired"), ("revoked", "Revoked")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "active":
            return queryset.active(now=now)
        if self.value() == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        if self.value() == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        return queryset


TOKEN_FIELDS = ("name", "user", "key_prefix", "created_at", "last_used_at", "expires_at", "revoked_at")


@admin.register(ApiToken)
class ApiTokenAdmin(StrictInputMixin, admin.ModelAdmin):
    """API tokens: created through token_create (the key is shown once), revoked through token_revoke.

    The digest is never shown; existing tokens are read-only.
    """

    list_display = TOKEN_FIELDS
    list_filter = (TokenStateFilter,)
    list_select_related = ("user",)
    search_fields = ("name", "key_prefix", "user__username")
    autocomplete_fields = ("user",)
    actions = ("revoke",)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ApiTokenAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        return ApiTokenAddForm.Meta.fields if obj is None else TOKEN_FIELDS

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else TOKEN_FIELDS

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_revoke_permission(self, request):
        return request.user.has_perm(f"{self.opts.app_label}.change_{self.opts.model_name}")

    def save_model(self, request, obj, form, change):
        token, key = services.token_create(user=obj.user, name=obj.name, expires_at=obj.expires_at)
        _adopt(obj, token)
        # The key exists only in this message: it is not stored, logged or put in a URL.
        self.message_user(
            request,
            format_html(
                "The key of token “{}” is <code class='wq-token-key'>{}</code>. "
                "Copy it now: only its digest is stored, so it cannot be shown again.",
                token.name,
                key,
            ),
            messages.SUCCESS,
        )

    @admin.action(description="Revoke", permissions=["revoke"])
    def revoke(self, request, queryset):
        requested = _posted_ids(request)
        tokens = list(queryset.filter(revoked_at__isnull=True).select_related("user"))
        requested |= {token.pk for token in tokens}
        already = len(requested) - len(tokens)
        if not tokens:
            self.message_user(request, _already_revoked(already), messages.WARNING)
            return None
        if request.POST.get("post"):
            now = timezone.now()
            revoked = [token for token in tokens if services.token_revoke(token=token, now=now)]
            if revoked:
                LogEntry.objects.log_actions(
                    user_id=request.user.pk, queryset=revoked, action_flag=CHANGE, change_message="Revoked."
                )
            self.message_user(
                request,
                ngettext("Revoked %(count)d token.", "Revoked %(count)d tokens.", len(revoked))
                % {"count": len(revoked)},
                messages.SUCCESS if revoked else messages.WARNING,
            )
            if len(requested) > len(revoked):
                self.message_user(request, _already_revoked(len(requested) - len(revoked)), messages.WARNING)
            return None
        return _confirmation(
            self,
            request,
            action="revoke",
            title="Revoke API tokens",
            question="Revoke these tokens? Clients using them are refused from now on; this cannot be undone.",
            rows=[(token, f"of {token.user}") for token in tokens],
            submit="Yes, revoke them",
            skipped=f"{_already_revoked(already)} {_will_be_skipped(already)}" if already else "",
        )


def _already_revoked(count: int) -> str:
    return ngettext("%(count)d was already revoked.", "%(count)d were already revoked.", count) % {"count": count}


# Django's own user admin, with the search bounded like the others (its search also serves the
# owner and user autocompletes of the admins above).
admin.site.unregister(get_user_model())


@admin.register(get_user_model())
class AccountAdmin(SearchWordsMixin, UserAdmin):
    pass
