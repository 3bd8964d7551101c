"""Every page and list a person, a program or an admin can reach asks the database the same number of
queries at 10 rows as at 200 (issue 19: years of history): no read per row listed (an N+1). Paginated
lists show a page of the 200, and still the same number.

Each case is one page, named by its id: what it lists is made at 10 rows, the page asked for (once to
warm sessions and caches, once counted), the same made up to 200 rows, and the page counted again.
The Django admin's pages are its change lists of every registered model (and the audit log's CSV
export), and the object pages that list rows of their own (inlines, a model's versions to delete,
an object's history). The front door (routing) is no Django page: its one list is the table of
replicas it reloads every second, read by routing.selectors.routable_replicas.
Rows are made in bulk (bulk_create, one query a table) so the module stays fast; each growth gives
every tenth row one of each variety the page shows differently (a training job, a serving booking
with a replica, a waitlisted request, borrowed time, a cancellation), so the first ten already carry
every per-page query and a per-row one shows as a difference. On a failure the message lists the
statements the 200 rows asked for that the 10 did not."""

import re
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from reservations.models import (
    GPU, Allocation, AuditEntry, Membership, Node, Notice, Reservation, Series, Team, TeamQuota,
)
from routing.models import GpuModelWeight, GpuWeight
from routing.selectors import routable_replicas
from serving.models import Model, ModelVersion, Replica, Serving
from trainer.models import TrainingJob
from web.models import CalendarFeed

from .support import FROZEN_NOW, NEXT_SLOT, SLOT, client_for, make_user, page_client

pytestmark = pytest.mark.usefixtures("frozen")

FEW, MANY = 10, 200
ACTIVE, CONFIRMED, COMPLETED = Reservation.Status.ACTIVE, Reservation.Status.CONFIRMED, Reservation.Status.COMPLETED
WAITLISTED, CANCELLED = Reservation.Status.WAITLISTED, Reservation.Status.CANCELLED
# Where each growth books, so that none overlaps another on a GPU: the owner's bookings ahead from the
# next slot on, their past ones over the last month (the usage report's default period), the other
# GPUs' live serving bookings around now.
PAST = FROZEN_NOW - timedelta(days=20)
# The first occurrence of World.series: 150 days ago, at 10:00 UTC.
SERIES_START = NEXT_SLOT - timedelta(days=150)
WEEK = "start=2030-01-07T00:00:00Z&end=2030-01-14T00:00:00Z"


class World:
    """The people, a small cluster and the rows each growth adds to, kept by index so a growth from
    10 to 200 rows goes on where the first 10 ended."""

    def __init__(self, cluster, team, other_team, owner, teammate, outsider):
        self.team, self.other_team = team, other_team
        self.owner, self.teammate, self.outsider = owner, teammate, outsider
        self.staff = make_user("staff", None, is_staff=True)
        self.root = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
        self.gpus = cluster["node1"] + cluster["node2"]
        self.people = []  # team members made in bulk, each acting, booking, registering once
        self.more_gpus = {}  # by pool (gpus_upto)
        # The rows whose own page is shown.
        self.booking = bulk_bookings(self, [0], user=owner, start_of=lambda i: FROZEN_NOW + timedelta(days=40))[0]
        self.serving_booking = bulk_bookings(
            self, [1], user=owner, start_of=lambda i: FROZEN_NOW - timedelta(minutes=105), status=ACTIVE,
        )[0]
        self.serving = Serving.objects.create(reservation=self.serving_booking, spec={"models": ["boxes"]}, status="serving")
        self.job = TrainingJob.objects.create(reservation=self.booking, spec={"model": "yolov8n.yaml"}, epochs=5)
        self.model = Model.objects.create(team=team, name="boxes", created_by=owner)
        self.chain_end = self.job  # the earliest job of the chain it resumed from (`resumes`)
        # A daily series of the most occurrences a rule may give, half of them past: `occurrences`
        # books them, on a GPU of its own.
        self.series_gpu = self.gpus_upto(range(1), "series")[0]
        self.series = Series.objects.create(
            user=owner, team=team, title="nightly", gpu_ids=[self.series_gpu.pk], gpu_count=1, slots=1,
            rule="FREQ=DAILY;COUNT=366", first_start=SERIES_START, last_start=SERIES_START + timedelta(days=366),
            time_zone="Europe/Berlin", on_conflict="skip", work={"job": {"model": "yolov8n.yaml", "epochs": 5}},
        )

    def people_upto(self, rows):
        """Team members up to the growth's last row, made in bulk."""
        wanted = range(len(self.people), rows.stop)
        if wanted:
            made = get_user_model().objects.bulk_create(
                get_user_model()(username=f"person-{i}", email=f"person-{i}@example.com", is_staff=i % 7 == 0)
                for i in wanted
            )
            Membership.objects.bulk_create(Membership(team=self.team, user=user) for user in made)
            self.people += made
        return self.people

    def gpus_upto(self, rows, pool):
        """GPUs beyond the cluster's 8, up to the growth's last row, on nodes of 8 named after their
        pool (each growth has its own, so none shares a GPU with another's bookings or replicas)."""
        gpus = self.more_gpus.setdefault(pool, [])
        wanted = range(len(gpus), rows.stop)
        if not wanted:
            return gpus
        names = {f"{pool}-{i // 8}" for i in wanted}
        nodes = {n.hostname: n for n in Node.objects.filter(hostname__in=names)}
        nodes.update((n.hostname, n) for n in Node.objects.bulk_create(
            Node(hostname=name, online=len(name) % 2 == 0, last_heartbeat=FROZEN_NOW) for name in sorted(names - set(nodes))
        ))
        gpus += GPU.objects.bulk_create(
            GPU(node=nodes[f"{pool}-{i // 8}"], index=i % 8, model=("NVIDIA A100-SXM4-80GB", "NVIDIA H100")[i % 2],
                memory_mb=81920, uuid=f"{pool}-{i}", healthy=i % 11 != 5)
            for i in wanted
        )
        return gpus


def bulk_bookings(world, rows, *, user, start_of, status=CONFIRMED, gpus_of=None, team=None, **fields):
    """Bookings in bulk with their allocations: `start_of(i)` and `gpus_of(i)` place row i (one slot,
    on cluster GPU i % 8 unless said), `status` a status or a function of i. An occurrence of a series
    (`series` given) is the one its start says, unless `occurrence` names it."""
    gpus_of = gpus_of or (lambda i: [world.gpus[i % 8]])
    status_of = status if callable(status) else (lambda i: status)
    team_of = team if callable(team) else (lambda i: team or world.team)
    rows = list(rows)
    made = Reservation.objects.bulk_create(
        Reservation(
            user=user(i) if callable(user) else user, team=team_of(i), title=f"run {i}", start=start_of(i),
            end=start_of(i) + SLOT, gpu_count=len(gpus_of(i)), status=status_of(i), borrowed=i % 10 == 3,
            preemptible=i % 10 == 3, priority=("normal", "low", "high")[i % 3],
            cancelled_at=FROZEN_NOW if status_of(i) == CANCELLED else None,
            **({"occurrence": start_of(i)} if fields.get("series") and "occurrence" not in fields else {}), **fields,
        )
        for i in rows
    )
    Allocation.objects.bulk_create(
        Allocation(reservation=r, gpu=gpu, start=r.start, end=r.end, live=r.status not in (WAITLISTED, CANCELLED))
        for i, r in zip(rows, made) for gpu in gpus_of(i)
    )
    return made


# --- Growths: what a page lists, `rows` more of it ---------------------------------------------------


def upcoming(world, rows):
    """The owner's bookings ahead, on the cluster's 8 GPUs slot after slot: in every ten a training
    job, a serving booking with a replica (stopped: the cluster's GPUs hold no live one), a waitlisted
    request, borrowed time; and an audit entry and a notice for each."""
    status = lambda i: WAITLISTED if i % 10 == 2 else CONFIRMED  # noqa: E731
    made = bulk_bookings(world, rows, user=world.owner, start_of=lambda i: NEXT_SLOT + (i // 8) * SLOT, status=status)
    work(world, rows, made)
    return made


def past(world, rows):
    """The owner's bookings of the last month: completed (each tenth cancelled), with jobs that ran."""
    status = lambda i: CANCELLED if i % 10 == 4 else COMPLETED  # noqa: E731
    made = bulk_bookings(world, rows, user=world.owner, start_of=lambda i: PAST + (i // 8) * SLOT, status=status)
    work(world, rows, made, ran=True)
    return made


def work(world, rows, bookings, ran=False):
    """A training job on every tenth booking and a serving booking with a replica on the next; an
    audit entry and a notice for each booking."""
    TrainingJob.objects.bulk_create(
        TrainingJob(
            reservation=r, spec={"model": "yolov8n.yaml"}, epochs=5, epoch=2, status="completed" if ran else "queued",
            started_at=r.start if ran else None, ended_at=r.end if ran else None, checkpoint=f"/runs/{r.pk}.pt",
        )
        for i, r in zip(rows, bookings) if i % 10 in (0, 5)
    )
    servings = Serving.objects.bulk_create(
        Serving(reservation=r, spec={"models": ["boxes"]}, resolved=[{"name": "boxes", "version": 1, "sha256": "0" * 64}],
                started_at=r.start if ran else None, ended_at=r.end if ran else None)
        for i, r in zip(rows, bookings) if i % 10 == 1
    )
    Replica.objects.bulk_create(
        Replica(serving=s, gpu=world.gpus[s.reservation.start.hour % 8], node=world.gpus[0].node, device="cpu",
                address="127.0.0.1:9", token="t", state=Replica.State.STOPPED, memory_budget=1 << 30,
                resident=[{"name": "boxes", "version": 1, "bytes": 1 << 20}])
        for s in servings
    )
    AuditEntry.objects.bulk_create(
        AuditEntry(action="create", actor=r.user, reservation=r, reason="booked", created=r.created) for r in bookings
    )
    Notice.objects.bulk_create(
        Notice(user=r.user, reservation=r, kind=Notice.Kind.MOVED, message=f"Booking #{r.pk} moved.") for r in bookings
    )


def on_an_unhealthy_gpu(world, rows):
    """The owner's bookings ahead (`upcoming`), one GPU of the cluster out of service under an eighth
    of them: each offers a move to healthy GPUs."""
    GPU.objects.filter(pk=world.gpus[7].pk).update(healthy=False)
    return upcoming(world, rows)


def series_ahead(world, rows):
    """The owner's recurring bookings, a series a row, three nights each on a GPU of its own; in
    every ten one in Berlin time, one of a number of GPUs, one with a night moved, a night cancelled,
    a night skipped, one cancelled from its second night on, a night waitlisted."""
    gpus = world.gpus_upto(rows, "series")
    nights = [NEXT_SLOT + n * timedelta(days=1) for n in range(3)]
    made = dict(zip(rows, Series.objects.bulk_create(
        Series(
            user=world.owner, team=world.team, title=f"series {i}", gpu_ids=None if i % 10 == 1 else [gpus[i].pk],
            gpu_count=1, slots=1, rule="FREQ=DAILY;COUNT=3", first_start=NEXT_SLOT,
            time_zone="Europe/Berlin" if i % 10 == 0 else "UTC", booked_through=nights[-1], last_start=nights[-1],
            cancelled_occurrences=[nights[2].isoformat()] if i % 10 == 3 else [],
            skipped=[{"at": nights[1].isoformat(), "reason": "taken"}] if i % 10 == 4 else [],
            ends_before=nights[1] if i % 10 == 5 else None,
        )
        for i in rows
    )))

    def status(i, n):
        if (i % 10, n) == (3, 2) or (i % 10 == 5 and n):
            return CANCELLED
        return WAITLISTED if (i % 10, n) == (7, 0) else CONFIRMED

    occurrences = [(i, n) for i in rows for n in range(3) if (i % 10, n) != (4, 1)]
    starts = {(i, n): nights[n] + (SLOT if (i % 10, n) == (2, 0) else timedelta(0)) for i, n in occurrences}
    booked = Reservation.objects.bulk_create(
        Reservation(
            user=world.owner, team=world.team, title=f"series {i}", start=starts[i, n], end=starts[i, n] + SLOT,
            gpu_count=1, status=status(i, n), series=made[i], occurrence=nights[n],
            cancelled_at=FROZEN_NOW if status(i, n) == CANCELLED else None,
        )
        for i, n in occurrences
    )
    Allocation.objects.bulk_create(
        Allocation(reservation=r, gpu=gpus[i], start=r.start, end=r.end, live=r.status not in (WAITLISTED, CANCELLED))
        for (i, _), r in zip(occurrences, booked)
    )
    AuditEntry.objects.bulk_create(
        AuditEntry(action="series_create", actor=world.owner, target=f"series:{s.pk}", reason="made") for s in made.values()
    )


def members(world, rows):
    """The team's members."""
    world.people_upto(rows)


def node_gpus(world, rows):
    """GPUs of one node."""
    node = world.gpus[0].node
    GPU.objects.bulk_create(GPU(node=node, index=100 + i, model="NVIDIA H100", uuid=f"more-{i}") for i in rows)


def live_replicas(world, rows):
    """Serving bookings holding their own GPU now, each with a ready replica (one live replica a GPU),
    serving a registered version; the GPUs on nodes of their own, some with routing weights."""
    gpus = world.gpus_upto(rows, "live")
    version = ModelVersion.objects.filter(model=world.model, version=1).first() or ModelVersion.objects.create(
        model=world.model, version=1, imgsz=64, class_names=["square"], size=1, sha256="0" * 64
    )
    people = world.people_upto(rows)
    made = bulk_bookings(
        world, rows, user=lambda i: people[i], start_of=lambda i: FROZEN_NOW - timedelta(hours=1),
        status=ACTIVE, gpus_of=lambda i: [gpus[i]],
    )
    servings = Serving.objects.bulk_create(
        Serving(reservation=r, spec={"models": ["boxes"], "max_batch": 4}, status=Serving.Status.SERVING,
                resolved=[{"name": "boxes", "version": version.version, "sha256": version.sha256}])
        for r in made
    )
    Replica.objects.bulk_create(
        Replica(serving=s, gpu=gpus[i], node=gpus[i].node, device="cuda:0", address=f"127.0.0.1:{9000 + i}",
                token="t", state=Replica.State.READY, memory_budget=1 << 30,
                resident=[{"name": "boxes", "version": 1, "sha256": "0" * 64}])
        for i, s in zip(rows, servings)
    )
    GpuWeight.objects.bulk_create(GpuWeight(gpu=gpus[i], weight=2) for i in rows if i % 10 == 6)


def nodes(world, rows):
    """GPUs on more nodes, a few out of service, some with their own routing weight."""
    gpus = world.gpus_upto(rows, "rack")
    GpuWeight.objects.bulk_create(GpuWeight(gpu=gpus[i], weight=1.5) for i in rows if i % 10 == 6)


def notices(world, rows):
    """The owner's notices, on bookings of theirs, every tenth a preemption warning with its time."""
    made = bulk_bookings(world, rows, user=world.owner, start_of=lambda i: PAST - timedelta(days=5) + (i // 8) * SLOT,
                         status=COMPLETED)
    Notice.objects.bulk_create(
        Notice(user=world.owner, reservation=r, kind=Notice.Kind.PREEMPTION_WARNING if i % 10 == 7 else Notice.Kind.MOVED,
               message="A notice.", data={"reclaim_at": r.end.isoformat()} if i % 10 == 7 else {},
               read_at=FROZEN_NOW if i % 2 else None)
        for i, r in zip(rows, made)
    )


def audit(world, rows):
    """Audit entries by different people (and the scheduler) on bookings of different teams, and on
    GPUs and quotas."""
    people = world.people_upto(rows)
    teams = dict(zip(rows, Team.objects.bulk_create(Team(name=f"Audited {i}", slug=f"audited-{i}") for i in rows)))
    made = bulk_bookings(
        world, rows, user=lambda i: people[i], team=lambda i: teams[i],
        start_of=lambda i: PAST - timedelta(days=10) + (i // 8) * SLOT, status=COMPLETED,
    )
    AuditEntry.objects.bulk_create(
        AuditEntry(action=("create", "cancel", "gpu_unhealthy", "quota_change")[i % 4], actor=people[i] if i % 5 else None,
                   reservation=r if i % 4 < 2 else None, target=f"gpu:{i}" if i % 4 == 2 else "", reason=f"entry {i}",
                   before={"n": i}, after={"n": i + 1})
        for i, r in zip(rows, made)
    )


def history(world, rows):
    """One booking's history: audit entries by different people, rebookings of it."""
    people = world.people_upto(rows)
    AuditEntry.objects.bulk_create(
        AuditEntry(action="update", actor=people[i] if i % 5 else None, reservation=world.booking, reason=f"edit {i}",
                   before={"title": str(i)}, after={"title": str(i + 1)})
        for i in rows
    )
    later = FROZEN_NOW + timedelta(days=60)
    bulk_bookings(world, rows, user=lambda i: people[i], start_of=lambda i: later + (i // 8) * SLOT, rebook_of=world.booking)


def replicas(world, rows):
    """Replicas of one serving booking, one a device at a time (the older ones stopped)."""
    gpus = world.gpus_upto(rows, "serving")
    Replica.objects.bulk_create(
        Replica(serving=world.serving, gpu=gpus[i], node=gpus[i].node, device="cuda:0", address=f"127.0.0.1:{i}", token="t",
                state=Replica.State.READY if i % 10 == 0 else Replica.State.STOPPED, memory_budget=1 << 30,
                resident=[{"name": "boxes", "version": 1, "bytes": 1 << 20}])
        for i in rows
    )


def models(world, rows):
    """Models of the team, each with two versions (one from a job), registered by different people."""
    people = world.people_upto(rows)
    made = Model.objects.bulk_create(
        Model(team=world.team if i % 3 else world.other_team, name=f"model-{i}", created_by=people[i], last_version=2)
        for i in rows
    )
    ModelVersion.objects.bulk_create(
        ModelVersion(model=m, version=v, imgsz=64, class_names=["a"], size=1, sha256=f"{i:060d}{v:04d}",
                     created_by=people[i], source_job=world.job if v == 2 else None)
        for i, m in zip(rows, made) for v in (1, 2)
    )


def versions(world, rows):
    """Versions of one model, registered by different people, each fifth from a job."""
    people = world.people_upto(rows)
    ModelVersion.objects.bulk_create(
        ModelVersion(model=world.model, version=i + 2, imgsz=64, class_names=["a"], size=1, sha256=f"{i:064d}",
                     created_by=people[i], source_job=world.job if i % 5 == 0 else None)
        for i in rows
    )


def teams(world, rows):
    """Teams the owner is in, every other with a quota and a booking this week, each with a feed."""
    made = dict(zip(rows, Team.objects.bulk_create(Team(name=f"Team {i:03d}", slug=f"team-{i}") for i in rows)))
    Membership.objects.bulk_create(
        Membership(team=t, user=world.owner, role="admin" if i % 4 == 0 else "member") for i, t in made.items()
    )
    TeamQuota.objects.bulk_create(TeamQuota(team=t, gpu_hours_per_week=100 + i) for i, t in made.items() if i % 2)
    CalendarFeed.objects.bulk_create(CalendarFeed(user=world.owner, team=t) for t in made.values())
    gpus = world.gpus_upto(rows, "team")
    bulk_bookings(world, [i for i in rows if i % 2], user=world.owner, team=lambda i: made[i], start_of=lambda i: NEXT_SLOT,
                  gpus_of=lambda i: [gpus[i]])


def users(world, rows):
    """People (in groups, some with API tokens), as the admin lists them."""
    people = world.people_upto(rows)
    groups = Group.objects.bulk_create(Group(name=f"group-{i}") for i in rows)
    Group.objects.get(pk=groups[0].pk).user_set.add(*(people[i] for i in rows))
    Token.objects.bulk_create(Token(user=people[i], key=f"{i:040d}") for i in rows)


def sign_ins(world, rows):
    """django-axes' records of sign-ins and failures."""
    for model in (AccessAttempt, AccessLog, AccessFailureLog):
        extra = {"get_data": "", "post_data": "", "failures_since_start": 1} if model is AccessAttempt else {}
        model.objects.bulk_create(
            model(username=f"person-{i}", ip_address="192.0.2.1", user_agent=f"agent {i}", path_info="/login/", **extra)
            for i in rows
        )


def gpu_model_weights(world, rows):
    GpuModelWeight.objects.bulk_create(GpuModelWeight(gpu_model=f"GPU model {i}", weight=1 + i) for i in rows)


def admin_history(world, rows):
    """The admin's own log of one booking's changes."""
    kind = ContentType.objects.get_for_model(Reservation)
    people = world.people_upto(rows)
    LogEntry.objects.bulk_create(
        LogEntry(user=people[i], content_type=kind, object_id=str(world.booking.pk), object_repr=str(world.booking),
                 action_flag=CHANGE, change_message="[]")
        for i in rows
    )


def resumes(world, rows):
    """The booking's job resumed from a chain of jobs (preempted and rebooked, again and again): the
    growth's rows are earlier links of the chain."""
    starts = FROZEN_NOW - timedelta(days=200)
    made = bulk_bookings(world, rows, user=world.owner, start_of=lambda i: starts + (i // 8) * SLOT, status=COMPLETED)
    links = TrainingJob.objects.bulk_create(TrainingJob(reservation=r, spec={}, epochs=5, epoch=1) for r in made)
    for later, earlier in zip([world.chain_end, *links], links):
        later.resumed_from = earlier
    TrainingJob.objects.bulk_update([world.chain_end, *links], ["resumed_from"])
    world.chain_end = links[-1]


def occurrences(world, rows):
    """World.series' occurrences, one a day from 150 days ago (past ones completed, each tenth
    cancelled), each tenth with a training job and each tenth with the rest of it rebooked after a
    preemption; beside them occurrences skipped and cancelled before they were booked, and the
    series' audit entries by different people."""
    day = timedelta(days=1)
    start_of = lambda i: SERIES_START + i * day  # noqa: E731
    status = lambda i: CANCELLED if i % 10 == 4 else (COMPLETED if start_of(i) < FROZEN_NOW else CONFIRMED)  # noqa: E731
    made = bulk_bookings(
        world, rows, user=world.owner, start_of=start_of, status=status, gpus_of=lambda i: [world.series_gpu],
        series=world.series,
    )
    TrainingJob.objects.bulk_create(
        TrainingJob(reservation=r, spec={"model": "yolov8n.yaml"}, epochs=5, epoch=2) for i, r in zip(rows, made) if i % 10 == 0
    )
    for i, r in zip(rows, made):
        if i % 10 == 9:
            bulk_bookings(
                world, [i], user=world.owner, start_of=lambda i: start_of(i) + 3 * SLOT, gpus_of=lambda i: [world.series_gpu],
                series=world.series, occurrence=r.start, rebook_of=r, status=status,
            )
    series = Series.objects.get(pk=world.series.pk)
    series.skipped += [{"at": start_of(300 + i // 10).isoformat(), "reason": "taken"} for i in rows if i % 10 == 6]
    series.cancelled_occurrences += [start_of(330 + i // 10).isoformat() for i in rows if i % 10 == 8]
    series.save()
    people = world.people_upto(rows)
    AuditEntry.objects.bulk_create(
        AuditEntry(action="series_change", actor=people[i] if i % 5 else None, target=f"series:{series.pk}", reason=f"change {i}")
        for i in rows
    )


def series_in_the_week(world, rows):
    """Occurrences of a different series each in the calendar's week, on GPUs of their own."""
    gpus = world.gpus_upto(rows, "series-week")
    made = Series.objects.bulk_create(
        Series(user=world.owner, team=world.team, gpu_ids=[gpus[i].pk], gpu_count=1, slots=1,
               rule=("FREQ=DAILY;COUNT=5", "FREQ=WEEKLY;BYDAY=MO,TH;UNTIL=20300301")[i % 2], first_start=NEXT_SLOT,
               last_start=NEXT_SLOT + timedelta(days=50), time_zone=("UTC", "Europe/Berlin", "America/New_York")[i % 3])
        for i in rows
    )
    series_of = dict(zip(rows, made))
    for i in rows:
        bulk_bookings(world, [i], user=world.owner, start_of=lambda i: NEXT_SLOT, gpus_of=lambda i: [gpus[i]], series=series_of[i],
                      occurrence=NEXT_SLOT)


# --- The pages -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """A page or list: who asks for it (`as_`: owner, outsider, owner-api, staff, staff-api, root, anyone), its
    URL (or a function of the World), what it lists (the growths)."""

    id: str
    url: object
    grows: tuple
    as_: str = "owner"
    post: object = None  # a form to POST (a function of the World) instead of a GET
    status: int = 200
    call: object = None  # instead of a request: a function of the World that reads (the front door)
    # Shows a page of the rows: at 200 rows it may show none of a variety the 10 had on their page
    # (no waitlisted request among the oldest 50), so it may ask fewer, never more.
    paged: bool = False


def page(id, url, *grows, **kwargs):
    return pytest.param(Page(id, url, grows, **kwargs), id=id)


def refused_booking(world):
    """The booking form for a slot the owner's first booking ahead holds: refused in place (409) with
    the booking in the way and suggestions, the form shown again with its lists."""
    return {
        "gpus": [world.gpus[0].pk], "date": NEXT_SLOT.date().isoformat(), "slot": NEXT_SLOT.strftime("%H:%M"),
        "slots": 1, "title": "", "priority": "normal", "auto_rebook": "on", "team": world.team.pk,
    }


WEB = [
    page("calendar", "/", upcoming, teams, nodes, models),
    page("calendar-events", f"/calendar/events/?{WEEK}", upcoming, nodes, series_in_the_week),
    page("book-refused", "/book/", upcoming, nodes, teams, models, post=refused_booking, status=409),
    page("quota-preview", lambda w: f"/book/quota-preview/?gpus={w.gpus[0].pk}&date={NEXT_SLOT.date()}&slot=20:00&slots=2",
         upcoming),
    page("series-preview", lambda w: (
        f"/book/series-preview/?gpus={w.gpus[0].pk}&date={(NEXT_SLOT + timedelta(days=3)).date()}&slot=20:00&slots=2"
        "&repeat=weekly&days=MO&days=TH&ends=count&count=20&on_conflict=skip"
    ), upcoming, past),
    page("series", lambda w: f"/series/{w.series.pk}/", occurrences, members),
    page("series-read-only", lambda w: f"/series/{w.series.pk}/", occurrences, as_="outsider"),
    page("resume-search", "/book/resume-options/?q=", past, paged=True),
    page("resume-search-by-title", "/book/resume-options/?q=run", past, paged=True),
    page("my-bookings", "/bookings/", upcoming, past, paged=True),
    page("my-bookings-page-2", "/bookings/?page=2", upcoming, past, paged=True),
    page("my-bookings-on-an-unhealthy-gpu", "/bookings/", on_an_unhealthy_gpu),
    page("booking-on-an-unhealthy-gpu", lambda w: f"/bookings/{w.booking.pk}/", on_an_unhealthy_gpu, history),
    page("booking", lambda w: f"/bookings/{w.booking.pk}/", history),
    page("booking-serving", lambda w: f"/bookings/{w.serving_booking.pk}/", replicas),
    page("booking-job", lambda w: f"/bookings/{w.booking.pk}/job/", resumes),
    page("notices", "/notices/", notices, paged=True),
    page("profile", "/profile/", teams),
    page("usage-report", "/reports/usage/", past, teams, as_="staff"),
    page("ical-own", lambda w: f"/ical/{CalendarFeed.objects.get_or_create(user=w.owner, team=None)[0].token}.ics",
         upcoming, series_ahead, as_="anyone"),
    page("ical-team", lambda w: f"/ical/{CalendarFeed.objects.get_or_create(user=w.owner, team=w.team)[0].token}.ics",
         upcoming, series_ahead, as_="anyone"),
    page("metrics", "/metrics", upcoming, past, live_replicas, teams, notices, audit, as_="anyone"),
    page("metrics-replicas", "/metrics/replicas", live_replicas, as_="anyone"),
    page("front-door-table", None, live_replicas, call=lambda w: routable_replicas(FROZEN_NOW)),
]

API = [
    page("api-gpus", "/api/v1/gpus/", nodes, as_="owner-api", paged=True),
    page("api-nodes", "/api/v1/nodes/", nodes, as_="owner-api", paged=True),
    page("api-reservations", "/api/v1/reservations/", upcoming, past, as_="owner-api", paged=True),
    page("api-reservations-of-a-week", f"/api/v1/reservations/?{WEEK}", upcoming, as_="owner-api", paged=True),
    page("api-reservation", lambda w: f"/api/v1/reservations/{w.serving_booking.pk}/", replicas, as_="owner-api"),
    page("api-availability", "/api/v1/availability/?gpu_count=2&slots=2", upcoming, as_="owner-api"),
    page("api-status", "/api/v1/status/", upcoming, nodes, live_replicas, as_="owner-api"),
    page("api-usage-report", "/api/v1/reports/usage/", past, teams, as_="staff-api"),
    page("api-notices", "/api/v1/notices/", notices, as_="owner-api", paged=True),
    page("api-teams", "/api/v1/teams/", teams, as_="owner-api", paged=True),
    page("api-team", lambda w: f"/api/v1/teams/{w.team.slug}/", upcoming, as_="owner-api"),
    page("api-team-usage", lambda w: f"/api/v1/teams/{w.team.slug}/usage/", upcoming, past, as_="owner-api"),
    page("api-audit", "/api/v1/audit/", audit, as_="staff-api", paged=True),
    page("api-jobs", "/api/v1/jobs/", upcoming, past, as_="owner-api", paged=True),
    page("api-job", lambda w: f"/api/v1/jobs/{w.job.pk}/", resumes, as_="owner-api"),
    page("api-models", "/api/v1/models/", models, as_="owner-api", paged=True),
    page("api-model", lambda w: f"/api/v1/models/{w.model.pk}/", versions, as_="owner-api"),
    page("api-replicas", "/api/v1/replicas/", live_replicas, replicas, as_="owner-api", paged=True),
]


def changelist(model, *grows):
    app, name = model._meta.app_label, model._meta.model_name
    return page(f"admin-{app}-{name}", f"/admin/{app}/{name}/", *grows, as_="root", paged=True)


ADMIN = [
    changelist(Group, users),
    changelist(get_user_model(), users),
    changelist(AccessAttempt, sign_ins),
    changelist(AccessLog, sign_ins),
    changelist(AccessFailureLog, sign_ins),
    page("admin-authtoken-tokenproxy", "/admin/authtoken/tokenproxy/", users, as_="root", paged=True),
    changelist(Team, teams),
    changelist(TeamQuota, teams),
    changelist(Node, nodes),
    changelist(GPU, nodes),
    changelist(Reservation, upcoming, past),
    changelist(AuditEntry, audit, upcoming),
    page("admin-audit-filtered", "/admin/reservations/auditentry/?action=create&q=entry", audit, as_="root", paged=True),
    page("admin-audit-export-csv", "/admin/reservations/auditentry/export.csv", audit, upcoming, as_="root"),
    changelist(Notice, notices, upcoming),
    changelist(Model, models),
    changelist(ModelVersion, models),
    changelist(Serving, upcoming, live_replicas),
    changelist(Replica, live_replicas, replicas, upcoming),
    changelist(GpuModelWeight, gpu_model_weights),
    changelist(GpuWeight, nodes, live_replicas),
    page("admin-team-change", lambda w: f"/admin/reservations/team/{w.team.pk}/change/", members, as_="root"),
    page("admin-node-change", lambda w: f"/admin/reservations/node/{w.gpus[0].node_id}/change/", node_gpus, as_="root"),
    page("admin-model-change", lambda w: f"/admin/serving/model/{w.model.pk}/change/", versions, as_="root"),
    page("admin-model-delete", lambda w: f"/admin/serving/model/{w.model.pk}/delete/", versions, as_="root"),
    page("admin-serving-change", lambda w: f"/admin/serving/serving/{w.serving.pk}/change/", replicas, as_="root"),
    page("admin-user-change", lambda w: f"/admin/auth/user/{w.owner.pk}/change/", teams, users, as_="root"),
    page("admin-reservation-history", lambda w: f"/admin/reservations/reservation/{w.booking.pk}/history/",
         admin_history, as_="root", paged=True),
]


@pytest.fixture
def world(cluster, team, other_team, owner, teammate, outsider, settings, tmp_path):
    settings.TRAINING_DATA_ROOTS = [tmp_path / "data"]
    settings.TRAINING_RUNS_DIR = tmp_path / "runs"
    return World(cluster, team, other_team, owner, teammate, outsider)


def client_as(world, who):
    return {
        "owner": lambda: page_client(world.owner),
        "outsider": lambda: page_client(world.outsider),
        "owner-api": lambda: client_for(world.owner),
        "staff": lambda: page_client(world.staff),
        "staff-api": lambda: client_for(world.staff),
        "root": lambda: page_client(world.root),
        "anyone": Client,
    }[who]()


def request_for(world, case):
    """The case's one read, as a function returning its status (a streamed body read to its end)."""
    if case.call is not None:
        return lambda: case.call(world) and 200
    client = client_as(world, case.as_)
    url = case.url(world) if callable(case.url) else case.url

    def get():
        response = client.post(url, case.post(world)) if case.post else client.get(url)
        if response.streaming:
            b"".join(response.streaming_content)
        return response.status_code

    return get


def statements(read, expected):
    with CaptureQueriesContext(connection) as captured:
        status = read()
    assert status == expected
    return [q["sql"] for q in captured]


def shape(sql):
    """A statement without its numbers: the same read of another row is the same shape."""
    return re.sub(r"\d+", "N", sql)


def grown(world, case, rows):
    for grow in case.grows:
        grow(world, rows)


@pytest.mark.parametrize("case", WEB + API + ADMIN)
def test_the_queries_of_a_page_do_not_grow_with_its_rows(world, case):
    read = request_for(world, case)
    grown(world, case, range(0, FEW))
    read()  # what only a first request reads (content types, the session's user): not counted
    few = statements(read, case.status)
    grown(world, case, range(FEW, MANY))
    many = statements(read, case.status)

    extra = Counter(map(shape, many)) - Counter(map(shape, few))
    grew = len(many) > len(few) if case.paged else len(many) != len(few)
    assert not grew, (
        f"{case.id}: {len(few)} queries at {FEW} rows, {len(many)} at {MANY}; asked more often:\n"
        + "\n".join(f"{n} x {sql[:300]}" for sql, n in extra.most_common(5))
    )
