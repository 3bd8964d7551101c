"""What the trainer tells other apps, without knowing them (serving registers a finished job's model
this way; nothing in trainer imports serving)."""

from django.dispatch import Signal

# Sent by the training process once the job's end is recorded: job_id, status (a TrainingJob.Status
# of TrainingJob.FINISHED). Receivers run in that process, on the node, after ultralytics has
# written its final weights; an exception in one is logged, never fails the job.
job_finished = Signal()

# Sent by nodes_mark_lost (the central reconcile) when nodes go offline: node_ids, now. What runs on
# those nodes besides training (serving replicas) is recorded as gone by its own app.
nodes_lost = Signal()
