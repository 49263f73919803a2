from django.apps import AppConfig


class QueuesConfig(AppConfig):
    name = "queues"
    verbose_name = "WonderQ"
    default_auto_field = "django.db.models.BigAutoField"
