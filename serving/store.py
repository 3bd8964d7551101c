"""The content-addressed weights store: `<MODEL_STORE>/<sha256>.pt`, inference-only copies of
training checkpoints. A file is only ever complete under its final name (written aside, hashed, then
renamed), and its name is its hash, so the same version is the same bytes wherever it is read.

A registration strips the weights in a folder of its own in the store (`.incoming-*`) and removes
it when done; a worker killed meanwhile (a request timeout, out of memory) leaves it behind. Each
registration sweeps away the `.incoming-*` folders older than an hour (STALE_INCOMING_S), far longer
than stripping takes, so a registration in progress elsewhere keeps its folder.

ultralytics and torch are imported when weights are stored, not when the web process starts."""

import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

from django.conf import settings

from trainer.runner import sha256_of

from .selectors import store_path


class UnusableWeights(Exception):
    """The source is not an ultralytics checkpoint that can be stored."""


class Stored(NamedTuple):
    sha256: str
    size: int
    class_names: list
    epoch: int | None  # epochs the weights had trained, when the checkpoint says
    imgsz: int | None  # the image size it trained at, when the checkpoint says


INCOMING = ".incoming-"
STALE_INCOMING_S = 3600


def _sweep_incoming(work):
    """Remove the `.incoming-*` folders beside `work` (this registration's, just made) older than
    STALE_INCOMING_S. Ages are measured against `work`'s own time: the store's clock, which on shared
    storage is the file server's, not this host's."""
    now = work.stat().st_mtime
    for folder in work.parent.glob(f"{INCOMING}*"):
        try:
            stale = folder != work and folder.is_dir() and now - folder.stat().st_mtime > STALE_INCOMING_S
        except FileNotFoundError:  # another registration swept or finished it
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)


def _class_names(model):
    names = getattr(model, "names", None) or {}
    if isinstance(names, dict):
        return [str(names[key]) for key in sorted(names)]
    return [str(name) for name in names]


def _epochs_trained(checkpoint):
    """A resumable checkpoint counts its last finished epoch from 0; a stripped one says -1, but its
    results table still ends at the epoch it was saved after (best.pt: the best epoch)."""
    epoch = checkpoint.get("epoch")
    if isinstance(epoch, int) and epoch >= 0:
        return epoch + 1
    epochs = (checkpoint.get("train_results") or {}).get("epoch") or []
    return int(epochs[-1]) if epochs else None


def _imgsz(checkpoint):
    imgsz = (checkpoint.get("train_args") or {}).get("imgsz")
    return imgsz if isinstance(imgsz, int) and imgsz > 0 else None


def store_put(source):
    """Store `source` stripped to inference only (no optimizer, the EMA weights as the model, half
    precision: ultralytics' own strip_optimizer), and return what was stored (Stored). The same
    source always gives the same bytes (its own date is kept), so registering it twice shares one
    file. Raises UnusableWeights when `source` is not an ultralytics checkpoint."""
    from ultralytics.utils.patches import torch_load
    from ultralytics.utils.torch_utils import strip_optimizer

    store = Path(settings.MODEL_STORE)
    store.mkdir(parents=True, exist_ok=True)
    try:
        checkpoint = torch_load(source, map_location="cpu")
    except Exception as exc:
        raise UnusableWeights(f"{Path(source).name} cannot be read as a checkpoint ({type(exc).__name__}).") from None
    # A checkpoint saved during training (last.pt, best.pt, the job's copies) holds its weights as the
    # EMA only ("model" is None until the run ends); strip_optimizer makes the EMA the model.
    if not isinstance(checkpoint, dict) or (checkpoint.get("model") is None and checkpoint.get("ema") is None):
        raise UnusableWeights(f"{Path(source).name} is not an ultralytics checkpoint (no model in it).")
    epoch, imgsz = _epochs_trained(checkpoint), _imgsz(checkpoint)
    # Its own date, not today's (strip_optimizer's default when a checkpoint has none): same bytes.
    date = checkpoint.get("date")
    del checkpoint
    # A folder of its own in the store (same file system: the rename below is atomic), and always
    # the same file name in it: torch.save writes the name into the archive, so a random name would
    # make the same weights different bytes.
    work = Path(tempfile.mkdtemp(prefix=INCOMING, dir=store))
    try:
        _sweep_incoming(work)
        partial = work / "weights.pt"
        stripped = strip_optimizer(source, str(partial), updates={"date": date})
        if not stripped:
            raise UnusableWeights(f"{Path(source).name} is not an ultralytics checkpoint.")
        class_names = _class_names(stripped["model"])
        del stripped
        with open(partial, "rb+") as handle:
            os.fsync(handle.fileno())
        sha256, size = sha256_of(partial), partial.stat().st_size
        target = store_path(sha256)
        if not target.exists():  # one that exists has these very bytes: its name is their hash
            os.replace(partial, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Stored(sha256=sha256, size=size, class_names=class_names, epoch=epoch, imgsz=imgsz)


def store_has(sha256):
    return store_path(sha256).is_file()


def store_remove(sha256):
    """Remove the weights with this hash (the caller knows no version refers to them any more)."""
    store_path(sha256).unlink(missing_ok=True)
