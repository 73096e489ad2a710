"""Routes of the emulator's own process (its ROOT_URLCONF): the upstream's ``/v1/`` paths, then ``/_emulator/``.

``work/poll`` and ``work/stats`` come before ``work/<work_id>`` so the literal segments win; ``?beta=true`` (sent
by older SDKs) is a query parameter and so never affects routing. Anything unmatched is a JSON 404.
"""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path, re_path

from workqueue.emulator import views

WORK = "v1/environments/<str:environment_id>/work"

urlpatterns: list[URLPattern | URLResolver] = [
    path("v1/environments", views.environments_collection),
    path("v1/environments/<str:environment_id>", views.environment_detail),
    path("v1/environments/<str:environment_id>/archive", views.environment_archive),
    path(WORK, views.work_collection),
    path(f"{WORK}/poll", views.work_poll),
    path(f"{WORK}/stats", views.work_stats),
    path(f"{WORK}/<str:work_id>", views.work_detail),
    path(f"{WORK}/<str:work_id>/ack", views.work_ack),
    path(f"{WORK}/<str:work_id>/heartbeat", views.work_heartbeat),
    path(f"{WORK}/<str:work_id>/stop", views.work_stop),
    path("_emulator/health", views.admin_health),
    path("_emulator/reset", views.admin_reset),
    path("_emulator/environments", views.admin_environments),
    path("_emulator/environments/<str:environment_id>/work", views.admin_enqueue),
    path("_emulator/environments/<str:environment_id>/work/bulk", views.admin_bulk_create),
    path(
        "_emulator/environments/<str:environment_id>/work/<str:work_id>/server-stop", views.admin_server_stop
    ),
    path(
        "_emulator/environments/<str:environment_id>/work/<str:work_id>/expire-lease",
        views.admin_expire_lease,
    ),
    path("_emulator/faults", views.admin_faults),
    path("_emulator/requests", views.admin_requests),
    path("_emulator/clock", views.admin_clock),
    path("_emulator/openapi.json", views.admin_openapi),
    re_path(r"", views.route_not_found),
]
