"""Every booking in start order, a page at a time: the admin list (latest first) and the API's ?gpu= read
the index instead of sorting years of bookings."""

from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('reservations', '0017_audit_partitions'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            model_name='reservation',
            index=models.Index(fields=['start', 'id'], name='reservation_start_id'),
        ),
    ]
