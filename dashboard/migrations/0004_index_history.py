from django.db import migrations, models


def fill_minutes(apps, schema_editor):
    # Nothing wrote samples before this migration; any row there is given its minute all the same.
    IndexSample = apps.get_model("dashboard", "IndexSample")
    for sample in IndexSample.objects.all().only("pk", "at"):
        IndexSample.objects.filter(pk=sample.pk).update(minute=int(sample.at.timestamp() // 60))


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0003_work_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="indexsample",
            name="minute",
            field=models.PositiveIntegerField(default=0),
            preserve_default=False,
        ),
        migrations.RunPython(fill_minutes, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="indexsample",
            constraint=models.UniqueConstraint(fields=("environment_id", "minute"), name="index_sample_once"),
        ),
        migrations.AddIndex(
            model_name="indexedwork",
            index=models.Index(fields=["environment_id", "acknowledged_at"], name="index_work_env_acked"),
        ),
    ]
