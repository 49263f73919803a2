from django.contrib import admin
from django.urls import include, path

from queues.dashboard import dashboard_view

urlpatterns = [
    # Before the admin's own URLs, which would otherwise claim admin/dashboard/ as an app label.
    path("admin/dashboard/", dashboard_view, name="queues_dashboard"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("queues.api.urls")),
]

# Under /api/ the errors that never reach DRF (an unknown path, a crash) answer JSON too.
handler400 = "queues.api.errors.bad_request"
handler403 = "queues.api.errors.permission_denied"
handler404 = "queues.api.errors.page_not_found"
handler500 = "queues.api.errors.server_error"
