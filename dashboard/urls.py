"""URL routes of the dashboard (the emulator has its own: ``workqueue.emulator.urls``)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import URLPattern, URLResolver, include, path

from dashboard import actions, auditlog, configure, signin, views

urlpatterns: list[URLPattern | URLResolver] = [
    path("healthz", views.healthz, name="healthz"),
    # Read pages (dashboard.views)
    path("", views.overview, name="overview"),
    path("stuck/", views.stuck_work, name="stuck"),
    path("search", views.search, name="search"),
    path("environments/<str:env_id>/", views.environment, name="environment"),
    path("environments/<str:env_id>/work/<str:work_id>/", views.work_item, name="work_item"),
    path("preferences/time", views.time_preference, name="time_preference"),
    path("preferences/theme", views.theme_preference, name="theme_preference"),
    path("robots.txt", views.robots_txt, name="robots_txt"),
    path("accounts/login/", signin.sign_in, name="login"),
    # The identity provider's two ends (answer 404 unless OIDC_ISSUER is set); the callback is the redirect URI.
    path("oidc/authenticate/", signin.begin_provider_sign_in, name="oidc_authentication_init"),
    path("oidc/callback/", signin.provider_callback, name="oidc_authentication_callback"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Actions, audit log, configuration (dashboard core)
    path(
        "environments/<str:env_id>/work/<str:work_id>/metadata/",
        actions.metadata_patch,
        name="metadata_patch",
    ),
    path("environments/<str:env_id>/work/<str:work_id>/stop/", actions.stop, name="stop"),
    path("environments/<str:env_id>/work/<str:work_id>/force-stop/", actions.force_stop, name="force_stop"),
    path("environments/<str:env_id>/bulk/", actions.bulk, name="bulk"),
    path("environments/<str:env_id>/bulk/start/", actions.bulk_start, name="bulk_start"),
    path("environments/<str:env_id>/bulk/<uuid:operation_id>/", actions.bulk_progress, name="bulk_progress"),
    path("bulk/", views.bulk_history, name="bulk_history"),
    path("bulk/stuck/", actions.bulk_across, name="bulk_across"),
    path("bulk/stuck/start/", actions.bulk_across_start, name="bulk_across_start"),
    path("bulk/<uuid:operation_id>/", actions.bulk_operation, name="bulk_operation"),
    path("audit/", auditlog.audit_log, name="audit_log"),
    path("audit/export.csv", auditlog.export_csv, name="audit_export_csv"),
    path("audit/export.json", auditlog.export_json, name="audit_export_json"),
    path("configure/", configure.configure, name="configure"),
    path("configure/keys/<str:env_id>/remove/", configure.remove_key, name="configure_remove_key"),
    path("admin/", admin.site.urls),
    path("", include("dashboard.gateway.urls")),  # /gateway/ (the Work API for scripts) and /tokens/
    path("", include("dashboard.live.urls")),  # /displays/, /display/<token>/, /readyz, /metrics
]
