"""Reads bounded by their window whatever the history: /metrics counts the jobs that ended in its window
(ended_at), the booking form offers the newest jobs that left a checkpoint (a partial index)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('trainer', '0004_batches_lost'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='trainingjob',
            index=models.Index(fields=['ended_at'], name='trainingjob_ended_at'),
        ),
        migrations.AddIndex(
            model_name='trainingjob',
            index=models.Index(condition=models.Q(('checkpoint', ''), _negated=True), fields=['-created', '-id'], name='trainingjob_resumable'),
        ),
    ]
