"""Grants: what a user other than a queue's owner may do with it (send, receive, manage).

The three permissions are independent: `manage` (settings, purge, delete, review, grants)
does not imply sending or receiving. A user with `manage` may grant others anything, but
only the owner and staff may widen that user's own grant: narrowing or deleting it is fine.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from queues.models import Queue, QueueGrant
from queues.services.queues import queue_access_cache_clear


class GrantError(Exception):
    """A grant request the rules refuse; `code` is the API's machine-readable reason."""

    code = "invalid_grant"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UserNotFound(GrantError):
    code = "user_not_found"


class GrantNotFound(GrantError):
    code = "grant_not_found"


class GrantToOwner(GrantError):
    code = "owner_grant"


class EmptyGrant(GrantError):
    code = "empty_grant"


class OwnGrant(GrantError):
    code = "own_grant"


def _user_by_name(username: str):
    User = get_user_model()
    field = User._meta.get_field(User.USERNAME_FIELD)
    # A name no user can have is not looked up: PostgreSQL refuses NUL in a query (a 500),
    # and a string longer than the column cannot match anything.
    if "\x00" in username or len(username) > (field.max_length or 150) or not username:
        raise UserNotFound(f"No user named {username[:40]!r}.")
    user = User.objects.filter(**{User.USERNAME_FIELD: username}).first()
    if user is None:
        raise UserNotFound(f"No user named {username[:40]!r}.")
    return user


def _is_owner_or_staff(*, queue: Queue, actor) -> bool:
    return actor is None or actor.is_staff or actor.pk == queue.owner_id


def grant_list(*, queue: Queue) -> list[QueueGrant]:
    """The grants on a queue, by username."""
    return list(QueueGrant.objects.filter(queue=queue).select_related("user").order_by("user__username", "id"))


def grant_get(*, queue: Queue, username: str) -> QueueGrant:
    """One user's grant on a queue; UserNotFound or GrantNotFound when there is none."""
    user = _user_by_name(username)
    grant = QueueGrant.objects.filter(queue=queue, user=user).select_related("user").first()
    if grant is None:
        raise GrantNotFound(f"User {user.get_username()!r} has no grant on queue {queue.name!r}.")
    return grant


def grant_set(
    *, queue: Queue, username: str, send: bool, receive: bool, manage: bool, actor=None
) -> tuple[QueueGrant, bool]:
    """Create or replace a user's grant on a queue; returns the grant and whether it is new.

    `actor` is who asks (None: the system). Refused: the owner (who needs no grant), a grant
    that allows nothing (revoke with grant_delete), and a non-owner widening their own grant.
    """
    user = _user_by_name(username)
    if user.pk == queue.owner_id:
        raise GrantToOwner(f"{user.get_username()!r} owns queue {queue.name!r} and needs no grant.")
    if not (send or receive or manage):
        raise EmptyGrant("A grant must allow at least one of send, receive, manage; delete it to revoke access.")
    values = {"can_send": send, "can_receive": receive, "can_manage": manage}
    if not _is_owner_or_staff(queue=queue, actor=actor) and actor.pk == user.pk:
        # Narrowing your own grant is fine, widening it is not: the WHERE clause requires every
        # permission asked for to be held already, so the row count is the verdict.
        held = {field: True for field, wanted in values.items() if wanted}
        narrowed = QueueGrant.objects.filter(queue=queue, user=user, **held).update(**values)
        queue_access_cache_clear()
        if not narrowed:
            # Not held (any more: deleted meanwhile, or the queue with it), or a widening.
            if not QueueGrant.objects.filter(queue=queue, user=user).exists():
                raise GrantNotFound(f"User {user.get_username()!r} has no grant on queue {queue.name!r}.")
            raise OwnGrant("Only the queue's owner or staff may widen your own grant; you may narrow or delete it.")
        # The answer is what was written, not a read back that a concurrent delete could miss.
        return QueueGrant(queue=queue, user=user, **values), False
    with transaction.atomic():
        # The row count decides: an UPDATE that found the grant replaced it; otherwise insert.
        created = not QueueGrant.objects.filter(queue=queue, user=user).update(**values)
        if created:
            try:
                with transaction.atomic():
                    QueueGrant.objects.create(queue=queue, user=user, **values)
            except IntegrityError:
                # A concurrent request inserted it between our UPDATE and INSERT: replace theirs.
                # Nothing to replace: the queue is gone (its foreign key failed); the view answers 404.
                if not QueueGrant.objects.filter(queue=queue, user=user).update(**values):
                    raise
                created = False
    queue_access_cache_clear()
    return QueueGrant(queue=queue, user=user, **values), created


def grant_delete(*, queue: Queue, username: str) -> None:
    """Remove a user's grant: they lose access with their next request here, within QUEUE_CACHE_SECONDS elsewhere.

    GrantNotFound if there was none.
    """
    user = _user_by_name(username)
    deleted, _ = QueueGrant.objects.filter(queue=queue, user=user).delete()
    queue_access_cache_clear()
    if not deleted:
        raise GrantNotFound(f"User {user.get_username()!r} has no grant on queue {queue.name!r}.")
