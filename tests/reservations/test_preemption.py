"""Priorities and soft preemption: each rule of reservations.policy, through the API and the services,
with time frozen at 09:17 (next slot 10:00, slots of two hours, 30 minutes' notice)."""

from datetime import datetime, timezone as dt_timezone

import pytest

from reservations import services
from reservations.models import AuditEntry, Notice, Reservation
from trainer import services as trainer_services
from trainer.models import TrainingJob

from ..support import NEXT_SLOT, SLOT, book, client_for, iso

pytestmark = pytest.mark.usefixtures("frozen")
URL = "/api/v1/reservations/"


def at(hour, minute=0, second=0):
    return datetime(2030, 1, 7, hour, minute, second, tzinfo=dt_timezone.utc)


def post_high(user, gpus, start, slots=1, **extra):
    body = {"gpus": [g.pk for g in gpus], "start": iso(start), "slots": slots, "priority": "high", **extra}
    return client_for(user).post(URL, body, format="json")


def running_job(reservation, spawned_at, **fields):
    return TrainingJob.objects.create(
        reservation=reservation, spec={"model": "yolov8n.yaml", "data": "/d/data.yaml", "epochs": 50},
        epochs=50, status="running", spawned_at=spawned_at, **fields,
    )


def refreshed(reservation):
    return Reservation.objects.get(pk=reservation.pk)


@pytest.fixture
def running_low(cluster, owner, frozen):
    """A low-priority (so preemptible) research booking 10:00-16:00 on node1/gpu0, training since
    10:00; the clock at 10:20."""
    victim = book(owner, cluster["node1"][:1], slots=3, priority="low", title="research")
    frozen.move_to(at(10, 20))
    services.reservations_advance()
    running_job(victim, spawned_at=at(10, 0, 5))
    return refreshed(victim)


# --- The preemption and what the victim's owner sees -------------------------------------------

def test_a_high_booking_takes_the_gpus_of_a_running_low_booking_and_warns_its_owner(
    cluster, running_low, owner, high_booker
):
    response = post_high(high_booker, cluster["node1"][:1], at(12))

    assert response.status_code == 201, response.content
    preemptor = response.json()
    assert preemptor["status"] == "confirmed" and preemptor["gpus"] == [cluster["node1"][0].pk]
    victim = refreshed(running_low)
    assert (victim.status, victim.end, victim.preempted_by_id, victim.reclaim_at) == (
        "active", at(12), preemptor["id"], at(12)
    )
    assert list(victim.allocations.values_list("end", flat=True)) == [at(12)]

    notice = Notice.objects.get(user=owner, kind="preemption_warning")
    assert notice.reservation == victim
    assert "reclaimed at 2030-01-07 12:00 UTC" in notice.message and "node1/gpu0" in notice.message
    listed = client_for(owner).get("/api/v1/notices/").json()["results"][0]
    assert listed["kind"] == "preemption_warning"
    assert listed["data"]["reclaim_at"] == "2030-01-07T12:00:00Z"
    assert listed["data"]["gpus"] == [cluster["node1"][0].pk] and listed["data"]["preempted_by"] == preemptor["id"]
    assert client_for(owner).get(f"{URL}{victim.pk}/").json()["reclaim_at"] == "2030-01-07T12:00:00Z"


def test_the_unused_part_is_rebooked_at_once_with_its_job_resuming_from_the_checkpoint(
    cluster, running_low, owner, high_booker
):
    victim_job = running_low.job

    preemptor_id = post_high(high_booker, cluster["node1"][:1], at(12)).json()["id"]

    rebook = Reservation.objects.get(rebook_of=running_low)
    # 12:00-16:00 was unused: two slots, at the nearest free window, on the victim's own node.
    assert (rebook.start, rebook.end, rebook.status, rebook.user, rebook.priority) == (
        at(12), at(16), "confirmed", owner, "low"
    )
    assert {a.gpu.node.hostname for a in rebook.allocations.select_related("gpu__node")} == {"node1"}
    assert rebook.job.resumed_from == victim_job and rebook.job.status == "queued"
    assert rebook.job.spec["resume_from"] == victim_job.pk and rebook.job.spec["epochs"] == 50
    notice = Notice.objects.get(kind="preemption_warning")
    assert notice.data["rebooked_as"] == rebook.pk and f"Rebooked as #{rebook.pk}" in notice.message
    assert AuditEntry.objects.get(action="rebook").reservation == rebook
    assert AuditEntry.objects.get(action="preempt").reservation_id == running_low.pk
    assert AuditEntry.objects.get(action="create", reservation_id=preemptor_id).reason == f"Preempts #{running_low.pk}."


def test_every_step_is_audited_with_the_preemptor_the_reason_and_the_times(cluster, running_low, high_booker, frozen):
    preemptor_id = post_high(high_booker, cluster["node1"][:1], at(12)).json()["id"]
    frozen.move_to(at(12, 0, 1))
    services.reservations_reclaim_due()

    entries = AuditEntry.objects.filter(reservation_id=running_low.pk).order_by("id")
    actions = [e.action for e in entries]
    assert actions[-4:] == ["preempt", "notice", "reclaim", "notice"]
    preempt = entries.get(action="preempt")
    assert preempt.actor == high_booker
    assert f"#{preemptor_id} (high, highbooker)" in preempt.reason and "reclaimed at 2030-01-07 12:00 UTC" in preempt.reason
    assert preempt.before["end"] == at(16).isoformat() and preempt.after["end"] == at(12).isoformat()
    assert preempt.after["preempted_by"] == preemptor_id and preempt.after["reclaim_at"] == at(12).isoformat()
    reclaim = entries.get(action="reclaim")
    assert reclaim.before["status"] == "active" and reclaim.after["status"] == "preempted"
    assert AuditEntry.objects.filter(action="notice", target__startswith="notice:").count() == 2


def test_at_the_reclaim_time_the_victim_ends_preempted_and_its_job_is_asked_to_stop(
    cluster, running_low, owner, high_booker, frozen
):
    post_high(high_booker, cluster["node1"][:1], at(12))
    frozen.move_to(at(11, 59, 59))
    assert services.reservations_reclaim_due() == 0
    assert refreshed(running_low).status == "active"

    frozen.move_to(at(12, 0, 1))
    assert services.reservations_reclaim_due() == 1
    services.reservations_advance()  # the clock must not call it completed

    victim = refreshed(running_low)
    assert victim.status == "preempted" and victim.reclaim_at == at(12)
    job = TrainingJob.objects.get(reservation=victim)
    assert job.status == "stopping" and "Preempted by reservation" in job.reason
    assert Notice.objects.filter(user=owner, kind="preempted", reservation=victim).count() == 1
    assert services.reservations_reclaim_due() == 0  # once


def test_the_node_agent_stops_the_job_at_the_reclaim_time_even_before_the_status_changes(
    cluster, running_low, high_booker
):
    post_high(high_booker, cluster["node1"][:1], at(12))
    victim, job = refreshed(running_low), running_low.job

    assert trainer_services.stop_deadline(victim, job) == at(12)


def test_a_booking_that_has_not_begun_is_moved_whole_with_a_notice(cluster, owner, high_booker):
    victim = book(owner, cluster["node1"][:1], start=NEXT_SLOT + SLOT, slots=1, priority="low")

    preemptor = post_high(high_booker, cluster["node1"][:1], NEXT_SLOT + SLOT).json()

    moved = refreshed(victim)
    assert moved.status == "confirmed" and moved.preempted_by is None
    assert (moved.start, moved.end) == (at(12), at(14))  # another GPU at the same time is nearest
    assert list(moved.allocations.values_list("gpu_id", "live")) == [(cluster["node1"][1].pk, True)]
    notice = Notice.objects.get(user=owner)
    assert notice.kind == "moved" and f"#{preemptor['id']}" in notice.message and "node1/gpu1" in notice.message
    assert AuditEntry.objects.get(action="move", reservation=victim).actor.username == "highbooker"


def test_a_victim_that_has_not_begun_and_opted_out_is_cancelled_with_a_notice(cluster, owner, high_booker):
    victim = book(owner, cluster["node1"][:1], start=NEXT_SLOT + SLOT, priority="low", auto_rebook=False)

    preemptor = post_high(high_booker, cluster["node1"][:1], NEXT_SLOT + SLOT).json()

    cancelled = refreshed(victim)
    assert (cancelled.status, cancelled.preempted_by_id) == ("cancelled", preemptor["id"])
    assert not cancelled.allocations.filter(live=True).exists()
    assert Notice.objects.get(user=owner).kind == "cancelled"
    assert "opted out" in AuditEntry.objects.get(action="preempt").reason


def test_a_running_victim_that_opted_out_is_not_rebooked(cluster, owner, high_booker, frozen):
    victim = book(owner, cluster["node1"][:1], slots=3, priority="low", auto_rebook=False)
    frozen.move_to(at(10, 20))

    assert post_high(high_booker, cluster["node1"][:1], at(12)).status_code == 201

    assert refreshed(victim).end == at(12)
    assert not Reservation.objects.filter(rebook_of=victim).exists()
    assert "Not rebooked: you opted out" in Notice.objects.get(user=owner).message


def test_a_normal_booking_may_preempt_a_low_preemptible_one(cluster, owner, teammate):
    victim = book(owner, cluster["node1"][:1], start=NEXT_SLOT + SLOT, priority="low")

    response = client_for(teammate).post(
        URL, {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT + SLOT), "slots": 1}, format="json"
    )

    assert response.status_code == 201, response.content
    assert refreshed(victim).allocations.get().gpu_id != cluster["node1"][0].pk


def test_a_gpu_count_booking_preempts_on_the_node_where_it_evicts_fewest(cluster, owner, teammate, high_booker):
    for gpu in cluster["node1"]:
        book(owner, [gpu], start=NEXT_SLOT + SLOT, priority="low")
    book(teammate, cluster["node2"][:1], start=NEXT_SLOT + SLOT, priority="normal")  # not preemptible
    book(owner, cluster["node2"][1:], start=NEXT_SLOT + SLOT, priority="low")

    response = client_for(high_booker).post(
        URL, {"gpu_count": 4, "start": iso(NEXT_SLOT + SLOT), "slots": 1, "priority": "high"}, format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["gpus"] == [g.pk for g in cluster["node1"]]
    assert Notice.objects.filter(kind="moved").count() == 4


# --- Refusals: each rule that stops a preemption ----------------------------------------------

def assert_untouched(victim):
    current = refreshed(victim)
    assert (current.start, current.end, current.status, current.preempted_by_id) == (
        victim.start, victim.end, victim.status, None
    )
    assert not Notice.objects.exists()
    assert not AuditEntry.objects.filter(action__in=["preempt", "move", "rebook", "notice"]).exists()


def test_an_equal_priority_booking_is_never_preempted(cluster, owner, teammate):
    victim = book(owner, cluster["node1"][:1], priority="normal", preemptible=True)

    response = client_for(teammate).post(
        URL, {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1}, format="json"
    )

    assert response.status_code == 409
    assert "not lower than normal" in response.json()["detail"]
    assert_untouched(victim)


def test_a_booking_that_is_not_preemptible_is_never_preempted(cluster, owner, high_booker):
    victim = book(owner, cluster["node1"][:1], priority="low", preemptible=False)

    response = post_high(high_booker, cluster["node1"][:1], NEXT_SLOT)

    assert response.status_code == 409
    assert f"reservation #{victim.pk} is not preemptible" in response.json()["detail"]
    assert response.json()["conflicts"][0]["id"] == victim.pk
    assert_untouched(victim)


def test_nothing_is_evicted_for_a_booking_that_still_would_not_fit(cluster, owner, teammate, high_booker):
    evictable = book(owner, cluster["node1"][:1], priority="low")
    book(teammate, cluster["node1"][1:2], priority="normal")

    response = post_high(high_booker, cluster["node1"][:2], NEXT_SLOT)

    assert response.status_code == 409
    assert_untouched(evictable)


def test_a_gpu_count_booking_with_no_node_it_could_take_gets_a_409(cluster, owner, high_booker):
    for gpu in cluster["node1"] + cluster["node2"]:
        book(owner, [gpu], priority="normal")

    response = client_for(high_booker).post(
        URL, {"gpu_count": 1, "start": iso(NEXT_SLOT), "slots": 1, "priority": "high"}, format="json"
    )

    assert response.status_code == 409
    assert not Notice.objects.exists()


def test_inside_the_notice_a_running_victim_gives_a_409_with_the_earliest_allowed_start(
    cluster, running_low, high_booker, frozen
):
    frozen.move_to(at(11, 45))

    response = post_high(high_booker, cluster["node1"][:1], at(12))

    assert response.status_code == 409
    body = response.json()
    assert body["earliest_allowed_start"] == "2030-01-07T14:00:00Z"
    assert "30 minutes' notice" in body["detail"]
    assert body["suggestions"][0] == {"gpus": [cluster["node1"][0].pk], "start": "2030-01-07T14:00:00Z", "end": "2030-01-07T16:00:00Z"}
    assert refreshed(running_low).end == at(16)
    assert post_high(high_booker, cluster["node1"][:1], at(14)).status_code == 201


def test_a_victim_starting_within_the_notice_needs_the_notice_too(cluster, owner, high_booker, frozen):
    victim = book(owner, cluster["node1"][:1], priority="low")  # 10:00
    frozen.move_to(at(9, 40))

    response = post_high(high_booker, cluster["node1"][:1], NEXT_SLOT)

    assert response.status_code == 409
    assert response.json()["earliest_allowed_start"] == "2030-01-07T12:00:00Z"
    assert_untouched(victim)


def test_a_victim_starting_after_the_notice_is_moved_without_it(cluster, owner, high_booker):
    victim = book(owner, cluster["node1"][:1], priority="low")  # 10:00, 43 minutes away

    assert post_high(high_booker, cluster["node1"][:1], NEXT_SLOT).status_code == 201
    assert refreshed(victim).allocations.get().gpu_id == cluster["node1"][1].pk


def test_a_job_inside_its_minimum_runtime_is_stopped_only_after_it(cluster, owner, high_booker, frozen, settings):
    settings.PREEMPTION_NOTICE_MINUTES = 0  # so that only the minimum runtime holds the reclaim back
    victim = book(owner, cluster["node1"][:1], slots=3, priority="low")
    frozen.move_to(at(11, 56))
    job = running_job(victim, spawned_at=at(11, 55))  # resumed at 11:55 after an interruption

    assert post_high(high_booker, cluster["node1"][:1], at(12)).status_code == 201

    victim = refreshed(victim)
    assert victim.end == at(12) and victim.reclaim_at == at(12, 10)
    assert trainer_services.stop_deadline(victim, job) == at(12, 10)
    assert "12:10 UTC" in Notice.objects.get(kind="preemption_warning").message
    frozen.move_to(at(12, 5))
    assert services.reservation_reclaim(reservation_id=victim.pk) == at(12, 10)
    assert refreshed(victim).status == "confirmed"  # not yet preempted
    frozen.move_to(at(12, 10))
    assert services.reservation_reclaim(reservation_id=victim.pk) is None
    assert refreshed(victim).status == "preempted"


def test_a_job_that_starts_late_moves_the_reclaim_when_it_comes(cluster, owner, high_booker, frozen, settings):
    settings.PREEMPTION_NOTICE_MINUTES = 0
    victim = book(owner, cluster["node1"][:1], slots=3, priority="low")
    frozen.move_to(at(10, 20))
    post_high(high_booker, cluster["node1"][:1], at(12))
    assert refreshed(victim).reclaim_at == at(12)  # nothing running yet
    frozen.move_to(at(11, 58))
    job = running_job(victim, spawned_at=at(11, 58))  # e.g. waited for a gang to free up

    frozen.move_to(at(12, 0, 1))
    assert services.reservation_reclaim(reservation_id=victim.pk) == at(12, 13)
    assert refreshed(victim).reclaim_at == at(12, 13)
    assert trainer_services.stop_deadline(refreshed(victim), job) == at(12, 13)


def test_without_the_permission_a_high_booking_is_refused_and_nothing_is_preempted(cluster, owner, teammate):
    victim = book(owner, cluster["node1"][:1], priority="low")

    response = post_high(teammate, cluster["node1"][:1], NEXT_SLOT)

    assert response.status_code == 403
    assert_untouched(victim)


def test_a_low_booking_never_preempts(cluster, owner, teammate):
    victim = book(owner, cluster["node1"][:1], priority="low")

    response = client_for(teammate).post(
        URL, {"gpus": [cluster["node1"][0].pk], "start": iso(NEXT_SLOT), "slots": 1, "priority": "low"}, format="json"
    )

    assert response.status_code == 409
    assert_untouched(victim)


def test_a_waitlisted_high_request_still_preempts_when_it_may(cluster, owner, high_booker):
    book(owner, cluster["node1"][:1], start=NEXT_SLOT + SLOT, priority="low")

    response = post_high(high_booker, cluster["node1"][:1], NEXT_SLOT + SLOT, waitlist=True)

    assert response.json()["status"] == "confirmed"


def test_a_preempted_job_that_completed_before_the_reclaim_cancels_its_rebook(cluster, running_low, owner, high_booker, frozen):
    post_high(high_booker, cluster["node1"][:1], at(12))
    rebook = Reservation.objects.get(rebook_of=running_low)
    TrainingJob.objects.filter(reservation=running_low).update(status="completed")

    frozen.move_to(at(12, 0, 1))
    services.reservations_reclaim_due()

    assert refreshed(rebook).status == "cancelled"
    assert refreshed(rebook).job.status == "stopped"
    assert Notice.objects.filter(user=owner, kind="cancelled", reservation=rebook).exists()


# --- The preemptor cancelled before the reclaim --------------------------------------------------

def test_cancelling_the_preemptor_before_the_reclaim_gives_the_victim_its_time_back(
    cluster, running_low, owner, high_booker, frozen, django_capture_on_commit_callbacks
):
    preemptor_id = post_high(high_booker, cluster["node1"][:1], at(12)).json()["id"]
    rebook = Reservation.objects.get(rebook_of=running_low)
    frozen.move_to(at(11))

    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(high_booker).post(f"{URL}{preemptor_id}/cancel/", {"reason": "pipeline aborted"}, format="json")

    assert response.status_code == 200
    victim = refreshed(running_low)
    assert (victim.end, victim.preempted_by_id, victim.reclaim_at, victim.status) == (at(16), None, None, "active")
    assert list(victim.allocations.values_list("end", flat=True)) == [at(16)]
    assert refreshed(rebook).status == "cancelled" and refreshed(rebook).job.status == "stopped"
    notice = Notice.objects.filter(user=owner).first()
    assert notice.kind == "preemption_withdrawn" and f"#{rebook.pk} is cancelled" in notice.message
    assert AuditEntry.objects.get(action="withdraw").after["end"] == at(16).isoformat()
    frozen.move_to(at(12, 0, 1))
    assert services.reservations_reclaim_due() == 0
    assert trainer_services.stop_deadline(refreshed(running_low), running_low.job) > at(16)


def test_a_victim_whose_freed_time_was_booked_meanwhile_keeps_the_cut_and_its_rebooking(
    cluster, running_low, teammate, high_booker, frozen, django_capture_on_commit_callbacks
):
    preemptor_id = post_high(high_booker, cluster["node1"][:1], at(12)).json()["id"]
    rebook = Reservation.objects.get(rebook_of=running_low)
    services.reservation_cancel(reservation_id=preemptor_id, actor=high_booker)  # on_commit not run here
    book(teammate, cluster["node1"][:1], start=at(14), priority="normal")

    assert services.preemption_withdraw(preemptor_id=preemptor_id) == []

    assert refreshed(running_low).end == at(12) and refreshed(rebook).status == "confirmed"
