"""WSGI entry point: `gunicorn wonderq_project.wsgi`."""

import gc
import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wonderq_project.settings")

application = get_wsgi_application()

# Load now what the worker keeps for its whole life (the URLconf imports every view), then take it out
# of the garbage collector's reach. A full collection walked all of Django's startup objects, about
# 100,000 of them: 37-47 ms in which the worker answered nothing, twice in every `bench` run. Since,
# 3.6-9 ms, as it walks only what requests have left.
get_resolver().url_patterns  # noqa: B018 (loading it is the point)
gc.collect()
gc.freeze()
