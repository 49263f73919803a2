from django.apps import AppConfig
from django.db import connections
from django.db.models.signals import post_migrate


def _setup_schedules(sender, using="default", **kwargs):
    from django_q.models import Schedule

    from queues.schedules import schedules_setup

    # A partial migrate (`migrate queues 0003` on a fresh database) ends before django_q's
    # tables exist; the migrate that creates them registers the schedules.
    connection = connections[using]
    with connection.cursor() as cursor:
        if Schedule._meta.db_table not in connection.introspection.table_names(cursor):
            return
    schedules_setup()


class QueuesConfig(AppConfig):
    name = "queues"
    verbose_name = "WonderQ"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from queues import checks  # noqa: F401 (registers them)

        # After every migrate the schedules exist, so a fresh install sweeps without a manual step.
        post_migrate.connect(_setup_schedules, sender=self, dispatch_uid="wonderq_schedules")
