from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("jobqueue", "0007_claim_order_and_worker_replacements"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="body",
            field=models.TextField(
                blank=True,
                help_text="Redis broker: the signed message as first sent; what a requeue sends again.",
            ),
        ),
        migrations.AddField(
            model_name="job",
            name="resent",
            field=models.PositiveIntegerField(
                default=0, help_text="Redis broker: times sent again after Redis lost it."
            ),
        ),
        migrations.AddIndex(
            model_name="job",
            index=models.Index(
                condition=models.Q(("resent__gt", 0)), fields=["resent"], name="jobqueue_job_resent"
            ),
        ),
    ]
