"""What serving does when other apps tell it something (connected in ServingConfig.ready)."""

import logging

from reservations.errors import BookingError
from trainer.models import TrainingJob

from . import registry, services

log = logging.getLogger(__name__)


def register_completed_job(sender, *, job_id, status, **kwargs):
    """trainer.signals.job_finished: a job whose spec names `register_model` has its best weights
    registered as the next version of that model when it completes. Runs in the training process on
    the node (where the run folder is); what it did, or why it could not, goes to the job's log."""
    if status != TrainingJob.Status.COMPLETED:
        return None
    spec = TrainingJob.objects.filter(pk=job_id).values_list("spec", flat=True).first() or {}
    name = spec.get("register_model")
    if not name:
        return None
    try:
        version = registry.model_register(user=None, job_id=job_id, name=name, weights=registry.Weights.BEST)
    except BookingError as exc:
        log.warning("Job %s: its best weights were not registered as %s: %s", job_id, name, exc.message)
        return None
    log.info("Job %s: best weights registered as %s:%s (sha256 %s).", job_id, name, version.version, version.sha256)
    return version


def replicas_of_lost_nodes(sender, *, node_ids, now, **kwargs):
    """trainer.signals.nodes_lost: replicas on nodes gone silent are gone too (no router may send
    them requests); a serving that was draining there is stopped. The node's supervisor starts fresh
    replicas if it comes back while the booking lasts."""
    return services.replicas_node_lost(node_ids=node_ids, now=now)
