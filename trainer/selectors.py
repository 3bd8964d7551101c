"""Reads of the training side that the pages need."""

import os
import re
from collections import deque
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Q

from reservations.models import Team

from .models import TrainingJob

# What the booking form offers as datasets: the data.yaml files under TRAINING_DATA_ROOTS, looked for
# a few folders deep and within a fixed budget of folders and directory entries, so that a root on a
# big shared file system costs the page a bounded read (a dataset past the budget can still be typed).
DATASET_FILE = "data.yaml"
DATASET_DEPTH = 3
DATASET_FOLDERS = 200
DATASET_ENTRIES = 5000
DATASETS_SHOWN = 50
# The walk is kept this long (per process, or shared with CACHE_URL): the calendar page asks on every
# load, and datasets come and go far less often.
DATASETS_CACHE_SECONDS = 60


def job_progress(reservation_ids):
    """{reservation id: {"status", "epoch", "epochs"}} for those of the bookings that carry a job."""
    rows = TrainingJob.objects.filter(reservation_id__in=reservation_ids).values_list(
        "reservation_id", "status", "epoch", "epochs"
    )
    return {rid: {"status": status, "epoch": epoch, "epochs": epochs} for rid, status, epoch, epochs in rows}


def resume_chain(job, limit):
    """[(id, run_dir)] of `job` and of the jobs it resumed from, latest first, at most `limit` of
    them: one query however long the chain (a job preempted and rebooked again and again), by a
    recursive query both databases run alike. A loop in the data repeats ids up to `limit`."""
    table, q = TrainingJob._meta.db_table, connection.ops.quote_name
    query = f"""
        WITH RECURSIVE chain (id, resumed_from_id, run_dir, depth) AS (
            SELECT id, resumed_from_id, run_dir, 1 FROM {q(table)} WHERE id = %s
            UNION ALL
            SELECT earlier.id, earlier.resumed_from_id, earlier.run_dir, chain.depth + 1
            FROM {q(table)} earlier JOIN chain ON earlier.id = chain.resumed_from_id
            WHERE chain.depth < %s
        )
        SELECT id, run_dir FROM chain ORDER BY depth
    """
    with connection.cursor() as cursor:
        cursor.execute(query, [job.pk, limit])
        return cursor.fetchall()


def training_datasets():
    """The paths of the data.yaml files under TRAINING_DATA_ROOTS, each root's demo dataset
    (`<root>/demo/data.yaml`, what the quick start writes) first, then by path; at most DATASETS_SHOWN.
    Symlinks are not followed (a job's path must resolve under a root, and a loop must not cost a
    walk); a folder holding a data.yaml is a dataset, and its own folders (images, labels) are not
    searched. Kept for DATASETS_CACHE_SECONDS."""
    roots = [Path(root) for root in settings.TRAINING_DATA_ROOTS]
    key = "training-datasets:" + "|".join(map(str, roots))
    return cache.get_or_set(key, lambda: _datasets(roots), DATASETS_CACHE_SECONDS)


def _datasets(roots):
    budget = {"folders": DATASET_FOLDERS, "entries": DATASET_ENTRIES}
    found = {path for root in roots for path in _datasets_under(root, budget)}
    demos = {str(root / "demo" / DATASET_FILE) for root in roots}
    return sorted(found, key=lambda path: (path not in demos, path))[:DATASETS_SHOWN]


def _datasets_under(root, budget):
    found = []
    folders = deque([(root, 0)])
    while folders and budget["folders"] > 0 and budget["entries"] > 0:
        folder, depth = folders.popleft()
        budget["folders"] -= 1
        files, subfolders = _entries(folder, budget)
        if DATASET_FILE in files:
            found.append(str(folder / DATASET_FILE))
        elif depth < DATASET_DEPTH:
            folders.extend((folder / name, depth + 1) for name in sorted(subfolders))
    return found


def _entries(folder, budget):
    """The names of `folder`'s regular files and folders (not symlinks, not hidden), reading at most
    the entries left in the budget."""
    files, subfolders = set(), []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                budget["entries"] -= 1
                if budget["entries"] < 0:
                    break
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    subfolders.append(entry.name)
                elif entry.is_file(follow_symlinks=False):
                    files.add(entry.name)
    except OSError:  # gone, unreadable, not a folder: nothing offered from it
        pass
    return files, subfolders


def resumable_jobs(user, search=""):
    """The jobs of `user`'s teams that left a checkpoint to resume from, newest first (the partial
    index trainingjob_resumable reads them in that order). `search`: a job's number ("12", "#12",
    "job 12"), or words of its booking's title. A queryset: callers take a page of it."""
    jobs = (
        TrainingJob.objects.filter(reservation__team__in=Team.objects.filter(memberships__user=user))
        .exclude(checkpoint="")
        .select_related("reservation")
        .order_by("-created", "-id")
    )
    search = search.strip()
    if not search:
        return jobs
    matches = Q(reservation__title__icontains=search)
    number = re.sub(r"^(?:job\s*)?#?\s*", "", search, flags=re.IGNORECASE)
    if number.isascii() and number.isdigit() and len(number) < 19:
        matches |= Q(pk=int(number))
    return jobs.filter(matches)
