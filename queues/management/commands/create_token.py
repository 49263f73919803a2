"""Create an API token (and its user, if needed); the key is printed once."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from queues.services import token_create


class Command(BaseCommand):
    help = "Create an API token for a user (created if missing). The key is printed once and never stored."

    def add_arguments(self, parser):
        parser.add_argument("username", help="The user the token belongs to; created if it does not exist.")
        parser.add_argument("--name", default="default", help="What the token is for (default: 'default').")
        parser.add_argument("--staff", action="store_true", help="Make a newly created user staff.")

    def handle(self, *args, username, name, staff, **options):
        if not username.strip():
            raise CommandError("username may not be blank")
        user, created = get_user_model().objects.get_or_create(username=username, defaults={"is_staff": staff})
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
            self.stderr.write(f"Created user {username!r}{' (staff)' if staff else ''}.")
        token, key = token_create(user=user, name=name)
        self.stderr.write(f"Token {token.name!r} for {username!r}; it is shown only now:")
        self.stdout.write(key)
