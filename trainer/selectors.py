"""Reads of the training side that the pages need."""

from .models import TrainingJob


def job_progress(reservation_ids):
    """{reservation id: {"status", "epoch", "epochs"}} for those of the bookings that carry a job."""
    rows = TrainingJob.objects.filter(reservation_id__in=reservation_ids).values_list(
        "reservation_id", "status", "epoch", "epochs"
    )
    return {rid: {"status": status, "epoch": epoch, "epochs": epochs} for rid, status, epoch, epochs in rows}
