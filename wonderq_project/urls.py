from django.contrib import admin
from django.urls import include, path

from queues.dashboard import dashboard_view

urlpatterns = [
    # Before the admin's own URLs, which would otherwise claim admin/dashboard/ as an app label.
    path("admin/dashboard/", dashboard_view, name="queues_dashboard"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("queues.api.urls")),
]
