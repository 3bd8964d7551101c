"""Real YOLO weights for the serving tests, made once per session by a short training run on the
synthetic dataset (no downloads)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.dataset import make_dataset

TRAIN = """
import sys
from ultralytics import YOLO
model = YOLO(sys.argv[1])
model.train(data=sys.argv[2], epochs=1, imgsz=64, batch=4, device="cpu", workers=0, plots=False, amp=False,
            project=sys.argv[3], name="train", exist_ok=True, verbose=False, val=True)
"""


class Weights:
    """`best` and `last` of one training run (best is inference-only, last keeps its optimizer), and
    `variant(i)`: the same network saved with different bytes, so each is a model of its own."""

    def __init__(self, folder):
        self.folder = folder
        self.best = folder / "train" / "weights" / "best.pt"
        self.last = folder / "train" / "weights" / "last.pt"

    def variant(self, index):
        import torch

        target = self.folder / f"variant-{index}.pt"
        if not target.exists():
            checkpoint = torch.load(self.best, map_location="cpu", weights_only=False)
            checkpoint["date"] = f"variant {index}"
            torch.save(checkpoint, target)
        return target


def _train(folder, config):
    folder.mkdir(parents=True, exist_ok=True)
    data = make_dataset(folder / "data", images=16, size=64)
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(folder / "ultralytics")}
    subprocess.run(
        [sys.executable, "-c", TRAIN, config, str(data), str(folder)],
        check=True, env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=600,
    )
    return Weights(folder)


@pytest.fixture(scope="session")
def yolo_weights(tmp_path_factory):
    """yolov8n trained for one epoch at 64 px: real weights, about 6 MB."""
    return _train(tmp_path_factory.mktemp("yolo-weights"), "yolov8n.yaml")
