"""Runs one training job in this process: the child that a node's worker starts on the booked devices.

    python manage.py run_training_job <job id>

The worker sets CUDA_VISIBLE_DEVICES to exactly the booked devices (or none for CPU devices),
YOLO_OFFLINE=1, and sends SIGTERM to stop. On SIGTERM the trainer stops after the current batch,
skips the validation passes a stop would otherwise run (they can outlast the stop grace on a real
validation set), and exits with a resumable checkpoint.

ultralytics strips last.pt after training (final_eval drops the optimizer and sets epoch -1, so it
can no longer be resumed). So every time ultralytics saves, a copy is taken into the job's own
checkpoint folder, atomically, and recorded with its SHA-256: a stop, a kill or a crash always leaves
the newest complete copy on record.
"""

import hashlib
import logging
import os
import signal
import threading
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from .models import TrainingJob
from .services import resume_source, source_finished
from .signals import job_finished

log = logging.getLogger(__name__)
Status = TrainingJob.Status

# Set by SIGTERM; read by the trainer between batches and before each validation pass.
STOP = threading.Event()
# Checkpoint copies kept per job: the newest, and one before it in case the newest is being written.
KEEP_CHECKPOINTS = 2
# Spec keys that are the service's, not training arguments (register_model: serving registers the
# best weights under that name when the job completes, through trainer.signals.job_finished).
NOT_ULTRALYTICS = ("model", "resume_from", "workers", "register_model")


def _trainer_class():
    from ultralytics.models.yolo.detect import DetectionTrainer

    class StoppableDetectionTrainer(DetectionTrainer):
        """DetectionTrainer that, once asked to stop, runs no more validation and leaves last.pt whole."""

        def validate(self):
            if STOP.is_set():
                return self.metrics, self.fitness
            return super().validate()

        def final_eval(self):
            if not STOP.is_set():
                super().final_eval()

    return StoppableDetectionTrainer


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_hashing(source, target):
    digest = hashlib.sha256()
    with open(source, "rb") as reader, open(target, "wb") as writer:
        for block in iter(lambda: reader.read(1 << 20), b""):
            digest.update(block)
            writer.write(block)
    return digest.hexdigest()


def job_dirs(job):
    run_dir = Path(settings.TRAINING_RUNS_DIR) / f"job-{job.pk}"
    return run_dir, run_dir / "checkpoints"


def _record_checkpoint(job_id, trainer, checkpoint_dir):
    """on_model_save: copy last.pt (still resumable here) into the job's folder and record it."""
    epoch = trainer.epoch + 1  # epochs finished, counting the one just saved
    target = checkpoint_dir / f"epoch-{epoch:04d}.pt"
    partial = target.with_suffix(".pt.partial")
    digest = _copy_hashing(trainer.last, partial)  # one read for both, on every epoch's save
    os.replace(partial, target)  # atomic: a reader sees the whole file or none
    BatchCount.saved = BatchCount.trained
    TrainingJob.objects.filter(pk=job_id).update(
        checkpoint=str(target), checkpoint_sha256=digest, checkpoint_epoch=epoch, updated=timezone.now()
    )
    for old in sorted(checkpoint_dir.glob("epoch-*.pt"))[:-KEEP_CHECKPOINTS]:
        old.unlink(missing_ok=True)


def _record_progress(job_id, trainer):
    """on_fit_epoch_end: epoch count and the latest losses and metrics reach the database."""
    losses = trainer.label_loss_items(trainer.tloss, prefix="train") if trainer.tloss is not None else {}
    metrics = {k: round(float(v), 6) for k, v in {**losses, **(trainer.metrics or {})}.items()}
    TrainingJob.objects.filter(pk=job_id).update(
        epoch=min(trainer.epoch + 1, trainer.epochs), epochs=trainer.epochs, metrics=metrics, updated=timezone.now()
    )


def _record_start(job_id, trainer, origin=""):
    """on_train_start: running, from which epoch; `origin` names the job it resumes or fine-tunes."""
    TrainingJob.objects.filter(pk=job_id, status__in=(*TrainingJob.WAITING, Status.STARTING)).update(
        status=Status.RUNNING,
        start_epoch=trainer.start_epoch,
        epochs=trainer.epochs,
        started_at=timezone.now(),
        # A resumed run is running again: the end its interruption recorded no longer holds.
        ended_at=None,
        reason=f"Training from epoch {trainer.start_epoch + 1} of {trainer.epochs}{origin}.",
    )


class BatchCount:
    """Batches trained, and how many of them the newest checkpoint holds: the difference is the
    progress a stop or crash loses."""

    trained = 0
    saved = 0


def _count_batch(trainer):
    BatchCount.trained += 1
    if STOP.is_set():
        trainer.stop = True


def _device_argument():
    """What ultralytics is given: the masked CUDA devices renumbered from 0, or the CPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    if not visible or visible == "-1":
        return "cpu"
    return ",".join(str(i) for i in range(len(visible.split(","))))


def train(job_id):
    """Train job `job_id` to completion or until SIGTERM. Returns the job's final status."""
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    job = TrainingJob.objects.select_related("resumed_from").get(pk=job_id)
    run_dir, checkpoint_dir = job_dirs(job)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    spec = dict(job.spec)
    source = resume_source(job)
    # A run that trained to its end cannot be resumed ("nothing to resume"): a job starting from
    # another's finished run (a series' nightly fine-tune of last night's model, or a resume_from
    # naming a completed job) trains anew from its weights, with its own spec's arguments.
    fine_tune = source is not None and source.pk != job.pk and source_finished(source)
    if fine_tune:
        origin = f", fine-tuning job {source.pk}'s final weights"
    elif source is not None and source.pk != job.pk:
        origin = f", resuming job {source.pk}'s checkpoint"
    else:
        origin = ""
    if job.checkpoint and (job.checkpoint_epoch or 0) >= job.epochs:
        # Interrupted after its last epoch was saved, before it was marked completed: ultralytics
        # refuses to resume a finished run ("nothing to resume"), and there is nothing left to train.
        _finish(job_id, Status.COMPLETED, "Training finished all epochs (the last was saved before an interruption).")
        return Status.COMPLETED

    from ultralytics import YOLO

    common = dict(
        device=_device_argument(),
        save_dir=str(run_dir / "train"),
        exist_ok=True,
        plots=False,
        amp=False if _device_argument() == "cpu" else True,
        workers=spec.get("workers", 0),
        verbose=True,
    )
    try:
        if source is not None and not fine_tune:
            # Resume: ultralytics takes the rest (data, epochs, optimizer state) from the checkpoint.
            model = YOLO(source.checkpoint)
            arguments = dict(resume=True, **common)
            for key in ("imgsz", "batch", "cache", "patience"):
                if key in spec:
                    arguments[key] = spec[key]
        else:
            model = YOLO(source.checkpoint if fine_tune else spec["model"])
            arguments = {k: v for k, v in spec.items() if k not in NOT_ULTRALYTICS}
            arguments.update(common, project=str(run_dir), name="train")
        model.add_callback("on_train_start", lambda t: _record_start(job_id, t, origin))
        model.add_callback("on_train_batch_end", _count_batch)
        model.add_callback("on_model_save", lambda t: _record_checkpoint(job_id, t, checkpoint_dir))
        model.add_callback("on_fit_epoch_end", lambda t: _record_progress(job_id, t))
        model.train(trainer=_trainer_class(), **arguments)
    except Exception as exc:
        log.exception("job %s failed", job_id)
        _finish(job_id, Status.FAILED, f"Training failed: {type(exc).__name__}: {exc}")
        return Status.FAILED
    if STOP.is_set():
        # A stop the service asked for (status stopping) is "stopped"; any other SIGTERM (the
        # worker died, the node shuts down) is an interruption, resumed within the booking.
        asked = TrainingJob.objects.filter(pk=job_id, status=Status.STOPPING).values_list("reason", flat=True).first()
        if asked is not None:
            _finish(job_id, Status.STOPPED, f"Stopped with a resumable checkpoint. Asked: {asked}")
            return Status.STOPPED
        _finish(job_id, Status.INTERRUPTED, "Interrupted (SIGTERM not from the scheduler); resumable checkpoint saved.")
        return Status.INTERRUPTED
    _finish(job_id, Status.COMPLETED, "Training finished all epochs.")
    return Status.COMPLETED


def _finish(job_id, status, reason):
    ended = TrainingJob.objects.filter(pk=job_id).exclude(status__in=TrainingJob.FINISHED + (Status.INTERRUPTED,))
    recorded = ended.update(
        status=status, reason=reason, ended_at=timezone.now(), pid=None,
        batches_lost=BatchCount.trained - BatchCount.saved,
    )
    if recorded and status in TrainingJob.FINISHED:
        for receiver, result in job_finished.send_robust(sender=TrainingJob, job_id=job_id, status=status):
            if isinstance(result, Exception):
                log.error("job %s: %s failed after the job ended: %r", job_id, getattr(receiver, "__name__", receiver), result)
