from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.routers import SimpleRouter

from queues.api.views import DocsView, HealthView, QueueViewSet, SchemaView

router = SimpleRouter()
router.register("queues", QueueViewSet, basename="queue")

urlpatterns = [
    path("health/", HealthView.as_view(), name="health"),
    path("schema/", SchemaView.as_view(permission_classes=[AllowAny]), name="schema"),
    path("docs/", DocsView.as_view(url_name="schema", permission_classes=[AllowAny]), name="docs"),
    *router.urls,
]
