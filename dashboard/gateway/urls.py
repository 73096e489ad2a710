"""Routes of the gateway (everything under /gateway/) and of the token pages (/tokens/)."""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path, re_path

from dashboard.gateway import api, views

urlpatterns: list[URLPattern | URLResolver] = [
    # One catch-all: the gateway answers every path under it in the upstream's error envelope, 404s included,
    # and does its own routing on the raw path (see dashboard.gateway.routes).
    re_path(r"^gateway/(?P<rest>.*)\Z", api.gateway, name="gateway"),
    path("tokens/", views.token_list, name="tokens"),
    path("tokens/new/", views.token_create, name="token_create"),
    path("tokens/created/", views.token_created, name="token_created"),
    path("tokens/<int:token_id>/revoke/", views.token_revoke, name="token_revoke"),
]
