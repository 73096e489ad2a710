"""Django admin registrations: the audit log, read-only (no add, change or delete for anyone, superusers included).

Environment keys are deliberately not registered: they are managed on the dashboard's configuration page, which
never shows more than the masked key.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from dashboard.models import AuditEntry


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("sequence", "created_at", "username", "action", "outcome", "environment_id", "work_id")
    list_filter = ("action", "outcome")
    search_fields = ("username", "environment_id", "work_id", "request_id")
    ordering = ("-sequence",)
    actions = None

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in AuditEntry._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
