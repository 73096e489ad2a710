"""A person's tokens end with their password or their account: changing the password or deactivating the user
revokes every active token they hold (one audit entry saying why), so a leaked script credential does not outlive
the reset that was meant to lock its owner out."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models.signals import post_save, pre_save
from django.utils import timezone

_WATCHED = {"password", "is_active"}


def _remember_before(sender: Any, instance: Any, update_fields: Any = None, **_: Any) -> None:
    instance._tokens_end = ""
    if instance.pk is None or (update_fields is not None and not _WATCHED & set(update_fields)):
        return
    before = sender.objects.filter(pk=instance.pk).values("password", "is_active").first()
    if before is None:
        return
    if before["is_active"] and not instance.is_active:
        instance._tokens_end = "account deactivated"
    elif before["password"] != instance.password:
        instance._tokens_end = "password changed"


def _revoke_tokens(sender: Any, instance: Any, created: bool = False, **_: Any) -> None:
    why = getattr(instance, "_tokens_end", "")
    if created or not why:
        return
    from dashboard import audit
    from dashboard.gateway.models import PersonalAccessToken

    now = timezone.now()
    active = PersonalAccessToken.objects.filter(user=instance, revoked_at__isnull=True, expires_at__gt=now)
    names = list(active.values_list("name", flat=True))
    if not names:
        return
    active.update(revoked_at=now)
    audit.record(
        user=None,
        username=instance.get_username(),
        action="token_revoke",
        outcome="succeeded",
        reason=why,
        sent={"tokens": names, "count": len(names)},
        via="page",
    )


def connect() -> None:
    user_model = get_user_model()
    pre_save.connect(_remember_before, sender=user_model, dispatch_uid="gateway-tokens-before-user-save")
    post_save.connect(_revoke_tokens, sender=user_model, dispatch_uid="gateway-tokens-after-user-save")
