"""A booking's training job (status, paths, checkpoints, log) is for the booking's team and staff
only; everyone sees the booking itself, since the calendar is shared."""

import pytest

from reservations.models import Reservation
from trainer.models import TrainingJob

from ..support import NEXT_SLOT, client_for, iso

pytestmark = pytest.mark.usefixtures("frozen")


@pytest.fixture
def job(cluster, owner, tmp_path, settings):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "data.yaml").write_text("path: .\n")
    settings.TRAINING_DATA_ROOTS = [(tmp_path / "data").resolve()]
    response = client_for(owner).post(
        "/api/v1/reservations/",
        {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1,
         "job": {"model": "yolov8n.yaml", "data": str(tmp_path / "data" / "data.yaml")}},
        format="json",
    )
    assert response.status_code == 201, response.content
    job = TrainingJob.objects.get()
    log = tmp_path / "train.log"
    log.write_text("epoch 1/3 loss 1.2 /secret/checkpoints/last.pt\n")
    TrainingJob.objects.filter(pk=job.pk).update(log_path=str(log), checkpoint="/secret/checkpoints/last.pt")
    return job


@pytest.mark.parametrize("who", ["owner", "teammate", "staff"])
def test_the_bookings_team_and_staff_see_the_job_and_its_log(request, job, who):
    client = client_for(request.getfixturevalue(who))

    detail = client.get(f"/api/v1/jobs/{job.pk}/")
    log = client.get(f"/api/v1/jobs/{job.pk}/log/")
    listed = client.get("/api/v1/jobs/")
    booking = client.get(f"/api/v1/reservations/{job.reservation_id}/")

    assert detail.status_code == 200 and detail.json()["checkpoint"] == "/secret/checkpoints/last.pt"
    assert log.status_code == 200 and "epoch 1/3" in log.content.decode()
    assert [j["id"] for j in listed.json()["results"]] == [job.pk]
    assert booking.json()["job"]["id"] == job.pk


def test_another_team_gets_a_404_for_the_job_and_its_log_and_no_job_in_the_booking(job, outsider):
    client = client_for(outsider)

    detail = client.get(f"/api/v1/jobs/{job.pk}/")
    log = client.get(f"/api/v1/jobs/{job.pk}/log/")
    listed = client.get("/api/v1/jobs/")
    booking = client.get(f"/api/v1/reservations/{job.reservation_id}/")
    bookings = client.get("/api/v1/reservations/")
    board = client.get("/api/v1/status/")

    assert detail.status_code == 404 and "secret" not in detail.content.decode()
    assert log.status_code == 404 and "secret" not in log.content.decode()
    assert listed.json()["results"] == []
    # The booking itself stays visible (a shared calendar), without the job.
    assert booking.status_code == 200 and booking.json()["id"] == job.reservation_id
    assert booking.json()["job"] is None
    assert [r["job"] for r in bookings.json()["results"]] == [None]
    upcoming = [r for row in board.json() for r in row["upcoming"]]
    assert [r["id"] for r in upcoming] == [job.reservation_id] and upcoming[0]["job"] is None
    assert "secret" not in bookings.content.decode() + board.content.decode()


def test_another_team_may_not_resume_from_the_job(job, cluster, outsider, tmp_path):
    response = client_for(outsider).post(
        "/api/v1/reservations/",
        {"gpus": [cluster["node2"][0].pk], "start": iso(NEXT_SLOT), "slots": 1,
         "job": {"model": "yolov8n.yaml", "data": str(tmp_path / "data" / "data.yaml"), "resume_from": job.pk}},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["job"] == [f"resume_from: no job {job.pk} in team nlp."]
    assert Reservation.objects.count() == 1


def test_an_owner_outside_the_bookings_team_still_sees_their_own_job(job, outsider, staff):
    moved = client_for(staff).post(
        f"/api/v1/reservations/{job.reservation_id}/transfer/", {"to": "outsider", "reason": "hand-over"}, format="json"
    )
    assert moved.status_code == 200, moved.content

    client = client_for(outsider)

    assert client.get(f"/api/v1/jobs/{job.pk}/").status_code == 200
    assert client.get(f"/api/v1/reservations/{job.reservation_id}/").json()["job"]["id"] == job.pk
