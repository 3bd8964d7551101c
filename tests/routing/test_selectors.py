"""What the front door reads of the replicas: weights, whether each may take requests, what it
serves, and the registry's bytes for it."""

from datetime import timedelta

import pytest
from django.utils import timezone

from reservations.models import Allocation, Node, Reservation
from routing.models import GpuModelWeight, GpuWeight
from routing.selectors import default_weight, routable_replicas
from serving.models import Replica, Serving

pytestmark = pytest.mark.django_db


@pytest.fixture
def now():
    return timezone.now()


def serving_replica(owner, gpu, defects, now, *, ends_in=timedelta(hours=1), **reservation_fields):
    reservation = Reservation.objects.create(
        user=owner, team=defects.team, start=now - timedelta(hours=1), end=now + ends_in, gpu_count=1,
        **{"status": "active", **reservation_fields},
    )
    Allocation.objects.create(reservation=reservation, gpu=gpu, start=reservation.start, end=reservation.end)
    version = defects.versions.get(version=2)
    serving = Serving.objects.create(
        reservation=reservation, status="serving", spec={"models": ["defects"], "max_batch": 4},
        resolved=[{"name": "defects", "version": 2, "sha256": version.sha256}],
    )
    Node.objects.filter(pk=gpu.node_id).update(online=True, last_heartbeat=now)
    return Replica.objects.create(
        serving=serving, gpu=gpu, node=gpu.node, device="cpu", address="127.0.0.1:9500", token="t",
        state="ready", memory_budget=1, resident=[{"name": "defects", "version": 2, "sha256": version.sha256}],
    )


def test_a_replica_reads_with_what_it_serves_its_weight_and_the_registrys_bytes(owner, cluster, defects, now):
    gpu = cluster["node1"][0]
    replica = serving_replica(owner, gpu, defects, now)

    [view], registry = routable_replicas(now)

    sha = defects.versions.get(version=2).sha256
    assert (view.id, view.team_id, view.max_batch, view.state, view.node_online) == (replica.pk, defects.team_id, 4, "ready", True)
    assert view.serves == {("defects", 2): sha} and view.resident == {("defects", 2): sha}
    assert registry == {(defects.team_id, "defects", 2): sha}
    assert view.weight == default_weight(gpu.model) == 6.0  # an A100 in the test cluster


def test_weights_come_from_the_gpu_then_its_model_then_the_defaults(owner, cluster, defects, now):
    gpu = cluster["node1"][0]
    serving_replica(owner, gpu, defects, now)

    GpuModelWeight.objects.create(gpu_model=gpu.model, weight=2.5)
    assert routable_replicas(now)[0][0].weight == 2.5
    GpuWeight.objects.create(gpu=gpu, weight=0.5)
    assert routable_replicas(now)[0][0].weight == 0.5
    assert default_weight("Tesla T4") == 1.0 and default_weight("cpu") == 1.0


@pytest.mark.parametrize(
    "change, state",
    [
        ({}, "ready"),
        ({"ends_in": timedelta(seconds=3)}, "draining"),  # within ROUTER_END_MARGIN_SECONDS of its end
        ({"status": "cancelled"}, "draining"),
    ],
)
def test_a_replica_stops_taking_requests_before_its_booking_ends(owner, cluster, defects, now, change, state):
    serving_replica(owner, cluster["node1"][0], defects, now, **change)

    assert routable_replicas(now)[0][0].state == state


def test_a_preempted_booking_takes_requests_until_shortly_before_its_reclaim(owner, cluster, defects, now, high_booker):
    preemptor = Reservation.objects.create(
        user=high_booker, team=defects.team, start=now, end=now + timedelta(hours=1), gpu_count=1, status="confirmed"
    )
    serving_replica(owner, cluster["node1"][0], defects, now, ends_in=timedelta(seconds=0),
                    preempted_by=preemptor, reclaim_at=now + timedelta(minutes=2))

    assert routable_replicas(now)[0][0].state == "ready"
    assert routable_replicas(now + timedelta(minutes=2) - timedelta(seconds=1))[0][0].state == "draining"


def test_a_replica_whose_node_stopped_heartbeating_is_out_at_once(owner, cluster, defects, now, settings):
    gpu = cluster["node1"][0]
    serving_replica(owner, gpu, defects, now)
    Node.objects.filter(pk=gpu.node_id).update(last_heartbeat=now - timedelta(seconds=settings.ROUTER_HEARTBEAT_GRACE_SECONDS + 1))

    assert routable_replicas(now)[0][0].node_online is False


def test_a_version_deleted_from_the_registry_is_served_by_nobody(owner, cluster, defects, now):
    serving_replica(owner, cluster["node1"][0], defects, now)
    Serving.objects.update(status="serving")
    defects.versions.filter(version=2).delete()

    views, registry = routable_replicas(now)
    assert registry == {} and ("defects", 2) in views[0].serves  # the view keeps what it was started with
