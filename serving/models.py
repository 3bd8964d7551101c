"""The model registry (models and their immutable versions), serving bookings and their replicas."""

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from reservations.models import GPU, Node, Reservation, Team
from trainer.models import TrainingJob

MODEL_NAME = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class Model(models.Model):
    """A team's named model: a series of versions, each a registered set of weights."""

    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="models")
    name = models.CharField(
        max_length=64,
        validators=[RegexValidator(MODEL_NAME, "Use lower-case letters, digits, '.', '_' and '-' (64 at most).")],
    )
    created = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True)
    # The highest version number ever given, deleted ones included: a number never names other bytes.
    last_version = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["team__slug", "name"]
        constraints = [models.UniqueConstraint(fields=["team", "name"], name="model_name_unique_in_team")]

    def __str__(self):
        return f"{self.team.slug}/{self.name}"


class ModelVersion(models.Model):
    """One version of a model: weights copied into the content-addressed store (`<store>/<sha256>.pt`)
    when registered, so the same version is the same bytes on every node. Never changed after."""

    class Weights(models.TextChoices):
        BEST = "best", "Best"
        LAST = "last", "Last"

    model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="versions")
    version = models.PositiveIntegerField()
    source_job = models.ForeignKey(TrainingJob, on_delete=models.PROTECT, null=True, blank=True, related_name="model_versions")
    source_epoch = models.PositiveIntegerField(null=True, blank=True, help_text="Epochs the weights had trained.")
    weights = models.CharField(max_length=4, choices=Weights.choices, default=Weights.BEST)
    metrics = models.JSONField(default=dict, blank=True, help_text="The job's metrics when registered (mAP50-95, ...).")
    imgsz = models.PositiveIntegerField(help_text="The image size it was trained at; the replica warms up at it.")
    class_names = models.JSONField(default=list, help_text="Class names by class id.")
    size = models.BigIntegerField(help_text="Bytes of the weights file.")
    sha256 = models.CharField(max_length=64, db_index=True)
    created = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True)

    class Meta:
        ordering = ["model_id", "-version"]
        constraints = [models.UniqueConstraint(fields=["model", "version"], name="model_version_unique")]

    def __str__(self):
        return f"{self.model}:{self.version}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionError("A model version never changes once registered; register a new version.")
        super().save(*args, **kwargs)


class Serving(models.Model):
    """What a serving booking serves (`serve` in the API), and where it stands."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        STARTING = "starting", "Starting"
        SERVING = "serving", "Serving"
        DRAINING = "draining", "Draining"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"

    FINISHED = (Status.STOPPED, Status.FAILED)
    LIVE = (Status.STARTING, Status.SERVING, Status.DRAINING)

    reservation = models.OneToOneField(Reservation, on_delete=models.PROTECT, related_name="serving")
    spec = models.JSONField(help_text="The validated serving spec (serving.spec).")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    reason = models.TextField(blank=True)
    # The model versions the replicas serve, resolved at slot start ("people" is its latest then).
    resolved = models.JSONField(default=list, blank=True)
    created = models.DateTimeField(default=timezone.now)
    updated = models.DateTimeField(auto_now=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self):
        return f"serving {self.pk} ({self.status})"


class Replica(models.Model):
    """One inference process on one booked device: where a router finds it, and how it stands."""

    class State(models.TextChoices):
        STARTING = "starting", "Starting"
        READY = "ready", "Ready"
        DRAINING = "draining", "Draining"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"

    ENDED = (State.STOPPED, State.FAILED)
    LIVE = (State.STARTING, State.READY, State.DRAINING)

    serving = models.ForeignKey(Serving, on_delete=models.PROTECT, related_name="replicas")
    gpu = models.ForeignKey(GPU, on_delete=models.PROTECT, related_name="replicas")
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="replicas")
    device = models.CharField(max_length=20, help_text="cuda:N on a GPU node, cpu on a CPU device.")
    address = models.CharField(max_length=255, help_text="host:port the replica listens on.")
    token = models.CharField(max_length=64, help_text="The secret its requests are signed with.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.STARTING, db_index=True)
    reason = models.TextField(blank=True)
    resident = models.JSONField(default=list, blank=True, help_text="Models in its cache, as it last said.")
    memory_budget = models.BigIntegerField(help_text="Bytes its models may take.")
    pid = models.PositiveIntegerField(null=True, blank=True)
    log_path = models.CharField(max_length=1000, blank=True)
    spawned_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["serving_id", "gpu_id", "-id"]
        constraints = [
            # One live replica per device; an ended one stays on record.
            models.UniqueConstraint(fields=["gpu"], condition=models.Q(state__in=["starting", "ready", "draining"]),
                                    name="one_live_replica_per_gpu"),
        ]

    def __str__(self):
        return f"replica {self.pk} on {self.gpu} ({self.state})"
