"""/metrics counts the jobs that ended in its window: an index on ended_at keeps that read small."""

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
    ]
