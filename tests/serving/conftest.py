"""The serving tests' fixtures over the real YOLO weights (`yolo_weights`, tests/conftest.py): a
resumable checkpoint, trained jobs, a store of their own."""

import shutil

import pytest

from trainer.models import TrainingJob

from ..support import book


@pytest.fixture(scope="session")
def resumable_checkpoint(yolo_weights):
    """A checkpoint as ultralytics saves it during training and the trainer copies it (trainer.runner):
    no "model" (None until the run ends), the weights as the EMA, optimizer state, its epoch counted
    from 0 (here: after the first epoch). Dated apart from best.pt (it has the same network), so
    stripped it is still other bytes."""
    import torch

    target = yolo_weights.folder / "resumable.pt"
    if not target.exists():
        checkpoint = torch.load(yolo_weights.best, map_location="cpu", weights_only=False)
        model = checkpoint["model"].float()
        checkpoint.update(
            model=None, ema=model.half(), updates=12, epoch=0, date="resumable copy",
            optimizer=torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9).state_dict(),
        )
        torch.save(checkpoint, target)
    return target


@pytest.fixture
def trained_job(frozen, cluster, yolo_weights, resumable_checkpoint, tmp_path):
    """make(user, status=..., files=...): a training job booked by `user` (at the frozen clock's next
    slot) whose run folder holds
    copies of the real weights: "best" and "last" (ultralytics' files) and "checkpoint" (the
    trainer's resumable copy, recorded on the job)."""
    gpus = iter(cluster["node1"] + cluster["node2"])

    def make(user, *, status=TrainingJob.Status.COMPLETED, files=("best", "last", "checkpoint")):
        reservation = book(user, [next(gpus)])
        run_dir = tmp_path / f"run-{reservation.pk}"
        weights = run_dir / "train" / "weights"
        weights.mkdir(parents=True)
        sources = {"best": yolo_weights.best, "last": yolo_weights.last, "checkpoint": resumable_checkpoint}
        targets = {"best": weights / "best.pt", "last": weights / "last.pt", "checkpoint": run_dir / "epoch-0001.pt"}
        for name in files:
            shutil.copyfile(sources[name], targets[name])
        return TrainingJob.objects.create(
            reservation=reservation, spec={"model": "yolov8n.yaml", "data": "/data/demo.yaml", "epochs": 1, "imgsz": 64},
            status=status, epoch=1, epochs=1, run_dir=str(run_dir),
            metrics={"metrics/mAP50-95(B)": 0.125, "metrics/mAP50(B)": 0.25},
            checkpoint=str(targets["checkpoint"]) if "checkpoint" in files else "",
            checkpoint_epoch=1 if "checkpoint" in files else None,
        )

    return make


@pytest.fixture
def model_store(settings, tmp_path):
    """This test's own weights store."""
    settings.MODEL_STORE = tmp_path / "model-store"
    return settings.MODEL_STORE
