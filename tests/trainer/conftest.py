import pytest

from trainer.dataset import make_dataset


@pytest.fixture
def training_data(tmp_path, settings, monkeypatch):
    """Data and run folders for this test, in settings and in the environment (training children and
    worker processes read their settings from it). Returns the demo dataset's data.yaml."""
    for name, value in (("TRAINING_DATA_ROOTS", tmp_path / "data"), ("TRAINING_RUNS_DIR", tmp_path / "runs")):
        monkeypatch.setenv(name, str(value))
    settings.TRAINING_DATA_ROOTS = [(tmp_path / "data").resolve()]
    settings.TRAINING_RUNS_DIR = (tmp_path / "runs").resolve()
    return make_dataset(tmp_path / "data" / "demo", images=32, size=64)
