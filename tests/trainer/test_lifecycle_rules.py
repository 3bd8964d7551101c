"""The lifecycle's rules, one at a time, without a worker."""

import types
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from reservations.models import Allocation, Node, Notice, Reservation
from reservations.services import reservation_cancel
from trainer import services
from trainer.agent import NodeAgent
from trainer.models import TrainingJob
from trainer.process import child_environment
from trainer.runner import _device_argument, _record_start, train

from ..support import NEXT_SLOT, SLOT

pytestmark = pytest.mark.usefixtures("frozen")


def booking(user, team, gpus, start, length, status="confirmed"):
    reservation = Reservation.objects.create(
        user=user, team=team, start=start, end=start + length, gpu_count=len(gpus), status=status
    )
    for gpu in gpus:
        Allocation.objects.create(reservation=reservation, gpu=gpu, start=start, end=start + length)
    return reservation


def job_for(reservation, status="running", **fields):
    return TrainingJob.objects.create(reservation=reservation, spec={"epochs": 5}, epochs=5, status=status, **fields)


def test_overrun_grace_is_ten_percent_of_the_booking_when_the_gpus_stay_free(cluster, owner, team):
    reservation = booking(owner, team, cluster["node1"][:1], NEXT_SLOT, 5 * SLOT)

    assert services.overrun_deadline(reservation) == reservation.end + SLOT / 2  # 10% of 10 hours


def test_the_next_booking_on_any_of_its_gpus_ends_the_overrun_grace_at_its_start(cluster, owner, team, teammate):
    reservation = booking(owner, team, cluster["node1"][:2], NEXT_SLOT, 5 * SLOT)
    booking(teammate, team, cluster["node1"][1:2], reservation.end, SLOT)

    assert services.overrun_deadline(reservation) == reservation.end


def test_a_silent_node_goes_offline_and_its_running_jobs_are_interrupted(cluster, owner, team, frozen):
    node = Node.objects.get(hostname="node1")
    Node.objects.filter(pk=node.pk).update(online=True, last_heartbeat=timezone.now())
    running = job_for(booking(owner, team, cluster["node1"][:1], NEXT_SLOT, SLOT), node=node)
    elsewhere = job_for(booking(owner, team, cluster["node2"][:1], NEXT_SLOT, SLOT), node=Node.objects.get(hostname="node2"))
    Node.objects.filter(hostname="node2").update(online=True, last_heartbeat=timezone.now() + timedelta(seconds=50))

    frozen.shift(timedelta(seconds=50))
    assert services.nodes_mark_lost() == 1

    node.refresh_from_db()
    assert node.online is False
    assert TrainingJob.objects.get(pk=running.pk).status == "interrupted"
    assert TrainingJob.objects.get(pk=elsewhere.pk).status == "running"


def test_a_resumed_run_clears_the_end_its_interruption_recorded_and_counts_from_its_new_start(cluster, owner, team):
    # Usage (the report and /metrics) counts [started_at, ended_at or now]: a stale end before the
    # new start would count the resumed run as nothing while it trains.
    earlier = timezone.now() - timedelta(minutes=5)
    training = job_for(
        booking(owner, team, cluster["node1"][:1], NEXT_SLOT, SLOT), status="interrupted",
        started_at=earlier - timedelta(minutes=30), ended_at=earlier,
    )
    services.job_claim_start(job_id=training.pk, node=Node.objects.get(hostname="node1"), devices=[0])

    _record_start(training.pk, types.SimpleNamespace(start_epoch=2, epochs=5))

    resumed = TrainingJob.objects.get(pk=training.pk)
    assert (resumed.status, resumed.started_at, resumed.ended_at) == ("running", timezone.now(), None)


def test_a_node_inside_the_heartbeat_window_is_not_lost(cluster, frozen):
    Node.objects.filter(hostname="node1").update(online=True, last_heartbeat=timezone.now())

    frozen.shift(timedelta(seconds=30))

    assert services.nodes_mark_lost() == 0


def test_the_owner_is_told_once_before_the_slot_of_a_running_job_ends(cluster, owner, team, frozen):
    reservation = booking(owner, team, cluster["node1"][:1], NEXT_SLOT, SLOT, status="active")
    job_for(reservation)

    frozen.move_to(reservation.end - timedelta(minutes=40))
    assert services.slot_end_notices(now=timezone.now(), lead=timedelta(minutes=30)) == 0
    frozen.move_to(reservation.end - timedelta(minutes=29))
    assert services.slot_end_notices(now=timezone.now(), lead=timedelta(minutes=30)) == 1
    assert services.slot_end_notices(now=timezone.now(), lead=timedelta(minutes=30)) == 0
    assert Notice.objects.get(kind="slot_ending").user == owner


@pytest.mark.parametrize(
    "status, killed, code, expected",
    [
        ("stopping", True, -9, "stopped"),  # killed after the grace
        ("stopping", False, 0, "stopped"),
        ("running", False, -9, "interrupted"),  # died without being asked
        ("completed", False, 0, "completed"),  # the child recorded its end itself
    ],
)
def test_an_exited_child_leaves_its_job_stopped_interrupted_or_completed_by_how_it_ended(cluster, owner, team, status, killed, code, expected):
    training = job_for(booking(owner, team, cluster["node1"][:1], NEXT_SLOT, SLOT), status=status, checkpoint_epoch=3)

    services.job_exited(job_id=training.pk, returncode=code, killed=killed)

    training.refresh_from_db()
    assert training.status == expected
    if killed:
        assert "epoch 3" in training.reason


def test_a_job_is_claimed_for_start_once(cluster, owner, team):
    training = job_for(booking(owner, team, cluster["node1"][:1], NEXT_SLOT, SLOT), status="queued")
    node = Node.objects.get(hostname="node1")

    assert services.job_claim_start(job_id=training.pk, node=node, devices=[0]) is True
    assert services.job_claim_start(job_id=training.pk, node=node, devices=[0]) is False
    assert TrainingJob.objects.get(pk=training.pk).status == "starting"


def test_cancelling_a_booking_with_a_queued_job_ends_the_job_too(cluster, owner, team):
    reservation = booking(owner, team, cluster["node1"][:1], NEXT_SLOT, SLOT)
    training = job_for(reservation, status="queued")

    reservation_cancel(reservation_id=reservation.pk, actor=owner, reason="changed plans")

    training.refresh_from_db()
    assert training.status == "stopped" and "changed plans" in training.reason


def test_a_no_show_releases_its_remaining_slots_only_when_enabled(cluster, owner, team, frozen, settings):
    reservation = booking(owner, team, cluster["node1"][:1], NEXT_SLOT, 4 * SLOT, status="active")
    frozen.move_to(NEXT_SLOT + SLOT + timedelta(minutes=5))

    settings.NO_SHOW_RELEASE = False
    assert services.reservations_release_unused(now=timezone.now()) == 0
    settings.NO_SHOW_RELEASE = True
    assert services.reservations_release_unused(now=timezone.now()) == 1

    reservation.refresh_from_db()
    assert reservation.end == NEXT_SLOT + 2 * SLOT  # the slot in progress is kept
    assert reservation.allocations.get().end == NEXT_SLOT + 2 * SLOT


def test_a_booking_with_a_job_is_not_a_no_show(cluster, owner, team, frozen, settings):
    settings.NO_SHOW_RELEASE = True
    reservation = booking(owner, team, cluster["node1"][:1], NEXT_SLOT, 4 * SLOT, status="active")
    job_for(reservation, status="running")
    frozen.move_to(NEXT_SLOT + SLOT + timedelta(minutes=5))

    assert services.reservations_release_unused(now=timezone.now()) == 0


def test_a_gang_waits_until_every_one_of_its_gpus_is_free(cluster, owner, team):
    agent = NodeAgent("node1", hardware=None)
    earlier = job_for(booking(owner, team, cluster["node1"][1:2], NEXT_SLOT - SLOT, SLOT))
    gang = job_for(booking(owner, team, cluster["node1"][:2], NEXT_SLOT, SLOT), status="queued")
    elsewhere = job_for(booking(owner, team, cluster["node1"][2:3], NEXT_SLOT, SLOT), status="queued")
    agent.children[earlier.pk] = object()  # the previous job on gpu1 has not exited yet

    assert agent._devices_free(TrainingJob.objects.get(pk=gang.pk)) is False
    assert agent._devices_free(TrainingJob.objects.get(pk=elsewhere.pk)) is True
    del agent.children[earlier.pk]
    assert agent._devices_free(TrainingJob.objects.get(pk=gang.pk)) is True


def test_the_agent_lets_a_job_overrun_while_the_gpus_stay_free_and_stops_it_for_the_next_booking(
    cluster, owner, team, teammate, frozen
):
    agent = NodeAgent("node1", hardware=None)
    reservation = booking(owner, team, cluster["node1"][:1], NEXT_SLOT, 5 * SLOT, status="active")
    training = job_for(reservation)
    after_end = reservation.end + timedelta(minutes=10)

    assert not agent._should_stop(training, reservation, after_end)  # inside the 60-minute grace
    assert agent._should_stop(training, reservation, reservation.end + timedelta(minutes=61))
    booking(teammate, team, cluster["node1"][:1], reservation.end, SLOT)
    assert agent._should_stop(training, reservation, after_end)  # someone else's slot has begun


def test_make_demo_dataset_writes_a_yolo_dataset(tmp_path):
    out = StringIO()
    call_command("make_demo_dataset", "--dest", str(tmp_path / "demo"), "--images", "8", stdout=out)

    data = (tmp_path / "demo" / "data.yaml").read_text()
    assert "train: images/train" in data and "0: square" in data
    images = sorted((tmp_path / "demo" / "images").rglob("*.png"))
    labels = sorted((tmp_path / "demo" / "labels").rglob("*.txt"))
    assert len(images) == len(labels) == 8
    for label in labels:
        for line in label.read_text().splitlines():
            cls, *box = line.split()
            assert cls in ("0", "1") and all(0 < float(v) <= 1 for v in box)
    assert str(tmp_path / "demo" / "data.yaml") in out.getvalue()


def test_the_child_sees_exactly_the_booked_gpus_and_ultralytics_gets_them_renumbered(monkeypatch):
    gpu_env = child_environment([1, 3])
    cpu_env = child_environment([])

    assert gpu_env["CUDA_VISIBLE_DEVICES"] == "1,3" and gpu_env["YOLO_OFFLINE"] == "1"
    assert cpu_env["CUDA_VISIBLE_DEVICES"] == ""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", gpu_env["CUDA_VISIBLE_DEVICES"])
    assert _device_argument() == "0,1"  # the two visible devices, as CUDA numbers them in the child
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert _device_argument() == "cpu"


def test_a_booking_of_gpus_places_its_job_on_their_node_with_their_indices(cluster, owner, team):
    reservation = booking(owner, team, [cluster["node2"][1], cluster["node2"][3]], NEXT_SLOT, SLOT)
    spanning = booking(owner, team, [cluster["node1"][0], cluster["node2"][0]], NEXT_SLOT, SLOT)

    node, devices = services.job_placement(job_for(reservation, status="queued"))

    assert (node.hostname, devices) == ("node2", [1, 3])
    assert services.job_placement(job_for(spanning, status="queued")) == (None, None)


def test_a_job_interrupted_after_its_last_epoch_was_saved_completes_instead_of_failing(
    owner, team, cluster, training_data
):
    # Its worker died between saving the last epoch and marking it completed: resuming would ask
    # ultralytics to go on from a finished run, which it refuses ("nothing to resume").
    reservation = booking(owner, team, cluster["node1"][:1], NEXT_SLOT - SLOT, 2 * SLOT, status="active")
    job = TrainingJob.objects.create(
        reservation=reservation, spec={"model": "yolov8n.yaml", "data": str(training_data), "epochs": 2},
        epochs=2, epoch=2, status=TrainingJob.Status.STARTING, checkpoint="/runs/job/checkpoints/epoch-0002.pt",
        checkpoint_epoch=2,
    )

    assert train(job.pk) == TrainingJob.Status.COMPLETED

    job.refresh_from_db()
    assert job.status == "completed" and job.ended_at is not None
    assert "finished all epochs" in job.reason
