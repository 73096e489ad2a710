"""The gateway's rate limit is per person, not per token: the buckets start again, one per user (they only hold a
minute's worth of calls, so nothing of value is dropped)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("gateway", "0001_initial"),
    ]

    operations = [
        migrations.DeleteModel(name="RateBucket"),
        migrations.CreateModel(
            name="RateBucket",
            fields=[
                (
                    "user",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="+",
                        serialize=False,
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                ("tokens", models.FloatField()),
                ("updated_at", models.FloatField()),
            ],
        ),
    ]
