"""What an admin sets for routing: how much a replica takes, by its GPU's model or for one GPU."""

from django.core.validators import MinValueValidator
from django.db import models

from reservations.models import GPU


class GpuModelWeight(models.Model):
    """A replica on a GPU of this model takes `weight` times the requests of a weight-1 replica (an
    A100 more than a T4). GPU models with no row weigh DEFAULT_WEIGHTS' figure, else 1."""

    gpu_model = models.CharField(
        max_length=100, unique=True, help_text="As the node reports it (NVIDIA A100-SXM4-80GB, cpu, ...)."
    )
    weight = models.FloatField(validators=[MinValueValidator(0.01)])

    class Meta:
        ordering = ["gpu_model"]

    def __str__(self):
        return f"{self.gpu_model}: {self.weight:g}"


class GpuWeight(models.Model):
    """One GPU's weight, over its model's (a GPU shared with other work, a slower card)."""

    gpu = models.OneToOneField(GPU, on_delete=models.CASCADE, related_name="routing_weight")
    weight = models.FloatField(validators=[MinValueValidator(0.01)])

    def __str__(self):
        return f"{self.gpu}: {self.weight:g}"
