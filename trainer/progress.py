"""A training job's history, epoch by epoch, as the booking page charts it; and which of a job's
files may leave the server.

The database keeps only the latest epoch's numbers (TrainingJob.metrics). The whole history is in
the results.csv that ultralytics appends one row to per epoch, in the run's `train` folder. A
resumed job writes a results.csv of its own (the epochs it trained), so the history of a job is that
of the job it resumed from, then its own rows.
"""

import csv
import io
import logging
from pathlib import Path

from django.conf import settings

from .models import TrainingJob
from .selectors import resume_chain

log = logging.getLogger(__name__)

# The columns charted: the training losses and the two mAPs. ultralytics names them thus for
# detection; other columns (precision, recall, validation losses, learning rates) are left out.
LOSS_COLUMNS = ("train/box_loss", "train/cls_loss", "train/dfl_loss")
MAP_COLUMNS = ("metrics/mAP50(B)", "metrics/mAP50-95(B)")
COLUMNS = LOSS_COLUMNS + MAP_COLUMNS
# One short row per epoch: a file larger than this is not a results.csv, or not one to read whole.
MAX_RESULTS_BYTES = 1 << 20
# A chain of resumes longer than this is cut (a loop in the data cannot hang the page).
MAX_RESUMES = 100


def runs_dir():
    return Path(settings.TRAINING_RUNS_DIR).resolve()


def inside_runs_dir(path):
    """`path` resolved (symbolic links followed), if it lies inside TRAINING_RUNS_DIR; else None.
    Only files there are the scheduler's own, to read or hand out."""
    if not path:
        return None
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return resolved if resolved.is_relative_to(runs_dir()) else None


def checkpoint_file(job):
    """The job's checkpoint as a path that may be downloaded, or None: there is none, it is gone,
    or it lies outside TRAINING_RUNS_DIR."""
    path = inside_runs_dir(job.checkpoint)
    if path is None:
        if job.checkpoint:
            log.warning("job %s: checkpoint %r is outside TRAINING_RUNS_DIR; not served", job.pk, job.checkpoint)
        return None
    return path if path.is_file() else None


def _number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None  # no NaN or infinities


def read_results(path):
    """The rows of one results.csv as {epoch: {column: number or None}}; {} when the file is missing,
    unreadable or outside TRAINING_RUNS_DIR. A row still being written (the last, cut short) or
    without a whole-number epoch is skipped."""
    path = inside_runs_dir(path)
    if path is None:
        return {}
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_RESULTS_BYTES)
    except OSError:
        return {}
    text = raw.decode("utf-8", errors="replace")
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # the last line is being written
    rows = {}
    reader = csv.reader(io.StringIO(text))
    header = [name.strip() for name in next(reader, [])]
    if "epoch" not in header:
        return {}
    for values in reader:
        if len(values) != len(header):
            continue
        row = dict(zip(header, (value.strip() for value in values)))
        epoch = _number(row["epoch"])
        if epoch is None or epoch != int(epoch) or epoch < 1:
            continue
        rows[int(epoch)] = {column: _number(row.get(column)) for column in COLUMNS}
    return rows


def _results_file(run_dir):
    # runner.train() has ultralytics save into <run_dir>/train (a resumed job too: save_dir is one
    # of the arguments ultralytics lets a resume change).
    return Path(run_dir) / "train" / "results.csv" if run_dir else None


def job_history(job):
    """The job's charted columns per epoch, over the jobs it resumed from too, as
    {"epoch": [1, 2, ...], column: [number or None, ...]}. A later run's row for an epoch replaces
    an earlier one's (an interrupted epoch trained again). With no results.csv anywhere, the one
    epoch the database holds (TrainingJob.metrics), if any."""
    chain, seen = [], set()
    for job_id, run_dir in resume_chain(job, MAX_RESUMES):
        if job_id in seen:  # a loop in the data
            break
        chain.append(run_dir)
        seen.add(job_id)
    rows = {}
    for run_dir in reversed(chain):  # oldest first, so each later run wins
        rows.update(read_results(_results_file(run_dir)))
    if job.epochs:
        rows = {epoch: row for epoch, row in rows.items() if epoch <= job.epochs}
    if not rows and job.epoch and job.metrics:
        rows = {job.epoch: {column: _number(job.metrics.get(column)) for column in COLUMNS}}
    epochs = sorted(rows)
    return {"epoch": epochs, **{column: [rows[e][column] for e in epochs] for column in COLUMNS}}


def booking_job(reservation):
    """The booking's training job, or None (selected with the booking by reservation_queryset())."""
    try:
        return reservation.job
    except TrainingJob.DoesNotExist:
        return None
