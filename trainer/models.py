from django.db import models
from django.db.models import Q
from django.utils import timezone

from reservations.models import Node, Reservation


class TrainingJob(models.Model):
    """The training a booking runs on its GPUs, and where it stands."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        STARTING = "starting", "Starting"
        RUNNING = "running", "Running"
        STOPPING = "stopping", "Stopping"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        INTERRUPTED = "interrupted", "Interrupted"
        STOPPED = "stopped", "Stopped"

    FINISHED = (Status.COMPLETED, Status.FAILED, Status.STOPPED)
    # Waiting for its devices: to be started (or resumed) when its booking is on.
    WAITING = (Status.QUEUED, Status.INTERRUPTED)
    # A training process exists, or is about to.
    LIVE = (Status.STARTING, Status.RUNNING, Status.STOPPING)

    reservation = models.OneToOneField(Reservation, on_delete=models.PROTECT, related_name="job")
    spec = models.JSONField(help_text="The validated training arguments (trainer.spec).")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED, db_index=True)
    reason = models.TextField(blank=True, help_text="Why the job last changed status.")
    epoch = models.PositiveIntegerField(default=0, help_text="Epochs finished.")
    epochs = models.PositiveIntegerField()
    metrics = models.JSONField(default=dict, blank=True)
    checkpoint = models.CharField(max_length=1000, blank=True, help_text="Latest resumable checkpoint.")
    checkpoint_sha256 = models.CharField(max_length=64, blank=True)
    checkpoint_epoch = models.PositiveIntegerField(null=True, blank=True)
    batches_lost = models.PositiveIntegerField(
        null=True, blank=True, help_text="Batches trained after the last checkpoint when the run ended."
    )
    resumed_from = models.ForeignKey("self", on_delete=models.PROTECT, null=True, blank=True, related_name="resumed_by")
    start_epoch = models.PositiveIntegerField(null=True, blank=True, help_text="First epoch this run trained.")
    node = models.ForeignKey(Node, on_delete=models.PROTECT, null=True, blank=True, related_name="jobs")
    devices = models.CharField(max_length=200, blank=True, help_text="CUDA_VISIBLE_DEVICES, or cpu.")
    pid = models.PositiveIntegerField(null=True, blank=True)
    log_path = models.CharField(max_length=1000, blank=True)
    run_dir = models.CharField(max_length=1000, blank=True)
    created = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(auto_now=True)
    spawned_at = models.DateTimeField(null=True, blank=True, help_text="When its training process started.")
    started_at = models.DateTimeField(null=True, blank=True, help_text="When training itself began.")
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [
            # /metrics reads the jobs that ended in its window (ops.collectors), whatever the history.
            models.Index(fields=["ended_at"], name="trainingjob_ended_at"),
            # The booking form's "resume from": the newest jobs that left a checkpoint, a page of them.
            models.Index(fields=["-created", "-id"], condition=~Q(checkpoint=""), name="trainingjob_resumable"),
        ]

    def __str__(self):
        return f"job {self.pk} ({self.status})"
