"""factory-boy factories for the models tests build on."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from queues.models import Message, Queue, QueueGrant


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda o: f"{o.username}@example.com")
    password = factory.django.Password("correct horse battery staple")

    class Params:
        staff = factory.Trait(is_staff=True, is_superuser=True)


class QueueFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Queue

    name = factory.Sequence(lambda n: f"queue-{n}")
    owner = factory.SubFactory(UserFactory)
    visibility_timeout = 30

    class Params:
        requeue = factory.Trait(on_timeout=Queue.OnTimeout.REQUEUE)


class QueueGrantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = QueueGrant

    queue = factory.SubFactory(QueueFactory)
    user = factory.SubFactory(UserFactory)

    class Params:
        send_only = factory.Trait(can_send=True)
        receive_only = factory.Trait(can_receive=True)
        manager = factory.Trait(can_send=True, can_receive=True, can_manage=True)


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    queue = factory.SubFactory(QueueFactory)
    body = factory.Sequence(lambda n: f"message {n}")
    sent_at = factory.LazyFunction(timezone.now)
    available_at = factory.LazyAttribute(lambda o: o.sent_at)
