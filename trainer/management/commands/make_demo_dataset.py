from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from trainer.dataset import DEMO_IMAGES, make_dataset


class Command(BaseCommand):
    help = "Write a synthetic detection dataset (no downloads) under the first training data root."

    def add_arguments(self, parser):
        parser.add_argument("--dest", type=Path, default=None, help="Folder (default: <first data root>/demo).")
        parser.add_argument(
            "--images", type=int, default=DEMO_IMAGES,
            help=f"How many (default {DEMO_IMAGES}: README's demo job then trains for a few minutes on a CPU).",
        )
        parser.add_argument("--size", type=int, default=64, help="Image side in pixels.")

    def handle(self, *args, dest, images, size, **options):
        dest = dest or settings.TRAINING_DATA_ROOTS[0] / "demo"
        data = make_dataset(dest, images=images, size=size)
        self.stdout.write(f"Wrote {images} images; use \"data\": \"{data}\" in a job spec.")
