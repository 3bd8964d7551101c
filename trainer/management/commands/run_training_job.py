import sys

from django.core.management.base import BaseCommand

from trainer.models import TrainingJob
from trainer.runner import train


class Command(BaseCommand):
    help = "Run one training job in this process (started by a node's worker; SIGTERM stops it)."

    def add_arguments(self, parser):
        parser.add_argument("job_id", type=int)

    def handle(self, *args, job_id, **options):
        status = train(job_id)
        sys.exit(1 if status == TrainingJob.Status.FAILED else 0)
