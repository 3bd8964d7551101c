"""A booking may carry a training spec: whitelisted arguments, paths only under the roots."""

import pytest

from reservations.models import Reservation
from trainer.models import TrainingJob

from ..support import NEXT_SLOT, iso

pytestmark = pytest.mark.usefixtures("frozen")
URL = "/api/v1/reservations/"


@pytest.fixture
def roots(tmp_path, settings):
    data_root, model_root = tmp_path / "datasets", tmp_path / "models"
    (data_root / "coco").mkdir(parents=True)
    model_root.mkdir()
    (data_root / "coco" / "data.yaml").write_text("path: .\n")
    (model_root / "best.pt").write_bytes(b"not really a model")
    (tmp_path / "outside.yaml").write_text("path: .\n")
    settings.TRAINING_DATA_ROOTS = [data_root.resolve()]
    settings.MODEL_ROOTS = [model_root.resolve()]
    return tmp_path


def book_with(api, cluster, job):
    return api.post(URL, {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1, "job": job}, format="json")


def test_a_booking_with_a_job_creates_a_queued_job_and_shows_it(api, cluster, roots):
    spec = {"model": "yolov8n.yaml", "data": str(roots / "datasets/coco/data.yaml"), "epochs": 3, "imgsz": 64, "batch": 4}

    response = book_with(api, cluster, spec)

    assert response.status_code == 201, response.content
    job = TrainingJob.objects.get()
    assert (job.status, job.epochs, job.reservation_id) == ("queued", 3, response.json()["id"])
    assert response.json()["job"]["id"] == job.pk and response.json()["job"]["status"] == "queued"
    assert job.spec["data"] == str((roots / "datasets/coco/data.yaml").resolve())
    assert api.get(f"/api/v1/jobs/{job.pk}/").json()["epochs"] == 3
    assert api.get(f"/api/v1/reservations/{job.reservation_id}/").json()["job"]["id"] == job.pk


def test_a_model_file_under_the_model_root_is_accepted(api, cluster, roots):
    spec = {"model": str(roots / "models/best.pt"), "data": str(roots / "datasets/coco/data.yaml")}

    assert book_with(api, cluster, spec).status_code == 201


@pytest.mark.parametrize(
    "change, key",
    [
        ({"data": "{root}/outside.yaml"}, "data"),  # outside the roots
        ({"data": "{root}/datasets/../outside.yaml"}, "data"),  # traversal
        ({"data": "datasets/coco/data.yaml"}, "data"),  # relative
        ({"data": "{root}/datasets/coco/missing.yaml"}, "data"),
        ({"model": "{root}/outside.yaml"}, "model"),
        ({"model": "../yolov8n.yaml"}, "model"),
        ({"model": "yolov8n.pt"}, "model"),  # a hub name: would download
        ({"epochs": 0}, "epochs"),
        ({"epochs": "ten"}, "epochs"),
        ({"imgsz": 100}, "imgsz"),
        ({"batch": -1}, "batch"),
        ({"optimizer": "Magic"}, "optimizer"),
        ({"cache": "gpu"}, "cache"),
        ({"device": "0"}, "device"),  # the service sets devices
        ({"project": "/tmp"}, "project"),  # ... and where runs go
        ({"resume_from": 999}, None),
        ({"resume_from": "latest"}, "resume_from"),  # a job id, or "previous" (a series only)
        ({"resume_from": True}, "resume_from"),
        ({"resume_from": 0}, "resume_from"),
    ],
)
def test_a_bad_job_spec_is_a_400_under_job_and_nothing_is_written(api, cluster, roots, change, key):
    spec = {"model": "yolov8n.yaml", "data": str(roots / "datasets/coco/data.yaml")}
    spec.update({k: v.format(root=roots) if isinstance(v, str) else v for k, v in change.items()})

    response = book_with(api, cluster, spec)

    assert response.status_code == 400, response.content
    errors = response.json()["job"]
    if key is not None:
        assert key in errors, errors
    assert not Reservation.objects.exists() and not TrainingJob.objects.exists()


def test_resume_from_previous_is_refused_for_a_booking_outside_a_series(api, cluster, roots):
    spec = {"model": "yolov8n.yaml", "data": str(roots / "datasets/coco/data.yaml"), "resume_from": "previous"}

    response = book_with(api, cluster, spec)

    assert response.status_code == 400, response.content
    (message,) = response.json()["job"]
    assert message.startswith('resume_from: "previous" is for a recurring booking (a series)')
    assert not Reservation.objects.exists() and not TrainingJob.objects.exists()


def test_the_job_log_tail_is_served_as_text(api, cluster, roots, tmp_path):
    spec = {"model": "yolov8n.yaml", "data": str(roots / "datasets/coco/data.yaml")}
    book_with(api, cluster, spec)
    job = TrainingJob.objects.get()
    before_start = api.get(f"/api/v1/jobs/{job.pk}/log/")
    log = tmp_path / "job.log"
    log.write_text("".join(f"line {i}\n" for i in range(1000)))
    job.log_path = str(log)
    job.save()

    tail = api.get(f"/api/v1/jobs/{job.pk}/log/", {"bytes": 20})

    assert tail.status_code == 200 and tail["Content-Type"] == "text/plain; charset=utf-8"
    assert tail.content == b"line 998\nline 999\n"  # whole lines within the 20 bytes asked for
    assert api.get(f"/api/v1/jobs/{job.pk}/log/", {"bytes": "x"}).status_code == 400
    assert before_start.status_code == 200 and before_start["Content-Type"] == "text/plain; charset=utf-8"
    assert before_start.content.decode().startswith(f"Job {job.pk} has not started yet")
