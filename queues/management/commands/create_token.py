"""Create an API token (and its user, if needed); the key is printed once."""

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.db import transaction

from queues.management.base import DatabaseCommand
from queues.models import ApiToken
from queues.services import token_create


def _checked(model, field_name: str, value: str, what: str) -> str:
    """`value` if the model's field accepts it (length, validators), else a CommandError naming the problem."""
    try:
        model._meta.get_field(field_name).clean(value, None)
    except ValidationError as exc:
        raise CommandError(f"{what} {value!r}: {' '.join(exc.messages)}") from None
    return value


class Command(DatabaseCommand):
    help = "Create an API token for a user (created if missing). The key is printed once and never stored."

    def add_arguments(self, parser):
        parser.add_argument("username", help="The user the token belongs to; created if it does not exist.")
        parser.add_argument("--name", default="default", help="What the token is for (default: 'default').")
        parser.add_argument("--staff", action="store_true", help="Make a newly created user staff.")

    def handle(self, *args, username, name, staff, **options):
        if not username.strip():
            raise CommandError("username may not be blank")
        user_model = get_user_model()
        _checked(user_model, user_model.USERNAME_FIELD, username, "username")
        _checked(ApiToken, "name", name, "--name")
        with transaction.atomic():  # a user made here is not left behind without its token
            user, created = user_model.objects.get_or_create(username=username, defaults={"is_staff": staff})
            if not user.is_active:
                raise CommandError(
                    f"User {username!r} is inactive: a token of theirs would not authenticate. "
                    "Activate the user first (admin, Users)."
                )
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
                self.stderr.write(f"Created user {username!r}{' (staff)' if staff else ''}.")
            elif staff and not user.is_staff:
                self.stderr.write(f"--staff applies to a new user only: {username!r} exists and stays as it is.")
            token, key = token_create(user=user, name=name)
        self.stderr.write(f"Token {token.name!r} for {username!r}; it is shown only now:")
        self.stdout.write(key)
