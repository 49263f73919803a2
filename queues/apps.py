from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _setup_schedules(sender, **kwargs):
    from queues.schedules import schedules_setup

    schedules_setup()


class QueuesConfig(AppConfig):
    name = "queues"
    verbose_name = "WonderQ"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # After every migrate the schedules exist, so a fresh install sweeps without a manual step.
        post_migrate.connect(_setup_schedules, sender=self, dispatch_uid="wonderq_schedules")
