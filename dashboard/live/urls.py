"""URL routes of the live layer (included by ``dashboard.urls``)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from dashboard.live import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("displays/", views.display_links, name="display_links"),
    path("displays/created/", views.display_link_created, name="display_link_created"),
    path("displays/<int:pk>/revoke", views.revoke_display_link, name="revoke_display_link"),
    path("display/<str:token>/", views.display, name="display"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics_view, name="metrics"),
]
