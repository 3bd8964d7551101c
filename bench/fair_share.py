"""What fair sharing costs: (1) the booking POST of a team with a quota against one of a team without,
taking turns in one run, with the SQL statements of each; (2) the waitlist sweep
(services.waitlist_promote) over 1,000 waiting requests of 20 teams, with and without quota rows.

    .venv/bin/python bench/fair_share.py [--part booking|sweep|both] [--rounds 8] [--per-round 150]
                                         [--sweep-rounds 3]

Needs PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres); recreates the database
`gpu_bench_fair_share` for each part. Everything runs in this process through Django's test client
(every middleware and the token authentication; no server, no network), so the figures are the
Python and SQL a request or a sweep costs on this machine, one at a time.

Booking: 16 nodes x 4 GPUs; team "free" (no quota) books GPUs 0-31, team "quota" (a quota that never
refuses: 100,000 GPU-hours a week and 64 GPUs at once, so both checks run in full) GPUs 32-63, each
booking one GPU x one slot on the next cell of its half, all from the start of next quota week, so
the quota team's week fills as the run goes (its bookings in the week are printed per round: the
quota check reads them all). Each round books --per-round for each team, the teams taking turns
every ten bookings.

Sweep: 20 teams with fair-share history (completed bookings over the last days), every GPU booked
for the next two days (1,536 bookings of the 20 teams), 1,000 waitlisted requests (50 a team, booked
through reservation_create(waitlist=True)) for GPUs and slots in those two days, so a sweep promotes
nothing: the steady state that beat's tick meets. Variants, alternating: no quota rows; a quota on
every team with room to spare (the GPUs are what keep each request waiting); half the teams over
their weekly limit (their requests wait for quota, before any GPU is looked at).
"""

import argparse
import os
import statistics
import time
from collections import deque
from datetime import timedelta

from benchlib import REPO, django_setup, in_process_env, machine, migrate, recreate_database

DB = "gpu_bench_fair_share"
NODES, GPUS_PER_NODE = 16, 4
CHUNK = 10  # bookings a team makes before the other team's turn
# The booking part books from next quota week on: a longer horizon than the default leaves room for more rounds.
ENV = in_process_env(DB, BOOKING_HORIZON_DAYS="60", LOG_LEVEL="WARNING")


def fresh_database():
    """Recreate the database, migrate it and register 16 nodes x 4 GPUs; returns PostgreSQL's version."""
    from django.db import connections

    from reservations.services import Device, node_register

    connections.close_all()
    version = recreate_database(DB)
    migrate(env={**os.environ, **ENV})
    for n in range(NODES):
        node_register(
            hostname=f"bench-node{n:02d}",
            devices=[Device(index=i, model="NVIDIA H100 80GB HBM3", memory_mb=81559, uuid=f"GPU-fs-{n:02d}-{i}")
                     for i in range(GPUS_PER_NODE)],
        )
    return version


def make_team(slug):
    from django.contrib.auth import get_user_model

    from reservations.models import Membership, Team

    team = Team.objects.create(name=slug.capitalize(), slug=slug)
    user = get_user_model()(username=f"{slug}-user")
    user.set_unusable_password()
    user.save()
    Membership.objects.create(team=team, user=user)
    return team, user


def statements_of(call):
    """The SQL statements `call()` runs, as Django logs them (BEGIN and COMMIT included)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # The log keeps the last 9,000 statements only: a sweep runs about as many.
    connection.queries_log = deque(maxlen=1_000_000)
    with CaptureQueriesContext(connection) as captured:
        call()
    return [q["sql"] for q in captured.captured_queries]


def short(sql, width=110):
    sql = " ".join(sql.split())
    return sql if len(sql) <= width else sql[: width - 3] + "..."


def booking_part(args):
    version = fresh_database()
    from django.test import Client
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from reservations import policy
    from reservations.models import GPU, Reservation, TeamQuota

    gpus = list(GPU.objects.order_by("id").values_list("id", flat=True))
    first = policy.week_start(timezone.now()) + timedelta(days=7)
    variants = {}
    for slug, half in (("free", gpus[:32]), ("quota", gpus[32:])):
        team, user = make_team(slug)
        client = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
        variants[slug] = {"team": team, "client": client, "gpus": half, "next": 0, "times": [], "rates": [], "cpu": []}
    TeamQuota.objects.create(team=variants["quota"]["team"], gpu_hours_per_week=100_000, max_gpus=64)

    def book(variant):
        i = variant["next"]
        variant["next"] += 1
        half = variant["gpus"]
        body = {"gpus": [half[i % len(half)]], "start": (first + (i // len(half)) * policy.slot_length()).isoformat(),
                "slots": 1}
        response = variant["client"].post("/api/v1/reservations/", body, content_type="application/json")
        assert response.status_code == 201, response.content

    for variant in variants.values():
        for _ in range(50):  # warm up: connections, caches, imports
            book(variant)
    sql = {slug: statements_of(lambda v=variant: book(v)) for slug, variant in variants.items()}

    in_week = []
    for round_ in range(args.rounds):
        in_week.append(Reservation.objects.filter(team=variants["quota"]["team"], start__gte=first).count())
        spent = {slug: [0.0, 0.0] for slug in variants}  # wall, CPU
        # The teams take turns every CHUNK bookings, so a busier moment of the machine hits both alike.
        for chunk in range(args.per_round // CHUNK):
            for slug in (["free", "quota"] if (round_ + chunk) % 2 == 0 else ["quota", "free"]):
                started, cpu = time.perf_counter(), time.process_time()
                for _ in range(CHUNK):
                    book(variants[slug])
                spent[slug][0] += time.perf_counter() - started
                spent[slug][1] += time.process_time() - cpu
        for slug, (took, cpu) in spent.items():
            variants[slug]["times"].append(took)
            variants[slug]["cpu"].append(cpu)
            variants[slug]["rates"].append(args.per_round / took)

    free, quota = variants["free"], variants["quota"]
    print(f"machine  : {machine()}; PostgreSQL {version}; {REPO.name}")
    print(f"load     : POST /api/v1/reservations/ (1 GPU x 1 slot, none overlapping), {args.rounds} rounds x "
          f"{args.per_round} per team, the teams taking turns every {CHUNK}, in process")
    print(f"{'round':>5} {'quota team bookings in week':>28} {'free/s':>8} {'quota/s':>8} {'ratio':>6} "
          f"{'CPU ms free':>12} {'CPU ms quota':>13}")
    for r in range(args.rounds):
        print(f"{r + 1:5d} {in_week[r]:28d} {free['rates'][r]:8.1f} {quota['rates'][r]:8.1f} "
              f"{quota['rates'][r] / free['rates'][r]:6.3f} {free['cpu'][r] / args.per_round * 1000:12.2f} "
              f"{quota['cpu'][r] / args.per_round * 1000:13.2f}")
    total = {slug: args.rounds * args.per_round / sum(v["times"]) for slug, v in variants.items()}
    ratios = [q / f for q, f in zip(quota["rates"], free["rates"])]
    print(f"throughput : free {total['free']:.1f} bookings/s, quota {total['quota']:.1f} bookings/s; "
          f"ratio quota/free {total['quota'] / total['free']:.3f} (per round median {statistics.median(ratios):.3f}, "
          f"range {min(ratios):.3f}-{max(ratios):.3f}) (goal >= 0.90)")
    cpu = {slug: sum(v["cpu"]) / (args.rounds * args.per_round) * 1000 for slug, v in variants.items()}
    print(f"this process's CPU per booking : free {cpu['free']:.2f} ms, quota {cpu['quota']:.2f} ms "
          f"(PostgreSQL's not included); load average at the end {os.getloadavg()[0]:.2f}")
    print(f"statements : free {len(sql['free'])}, quota {len(sql['quota'])} per booking "
          f"(goal: quota adds <= 1)")
    for slug in ("free", "quota"):
        print(f"  {slug}:")
        for statement in sql[slug]:
            print(f"    {short(statement)}")


def sweep_part(args):
    version = fresh_database()
    from django.utils import timezone

    from reservations import policy, selectors
    from reservations.models import GPU, Allocation, Reservation, TeamQuota
    from reservations.services import reservation_create, waitlist_promote

    teams = [make_team(f"team{k:02d}") for k in range(20)]
    gpus = list(GPU.objects.order_by("id").values_list("id", flat=True))
    now = timezone.now()
    slot = policy.slot_length()
    # Fair-share history: team k has k + 1 completed two-GPU, one-slot bookings a day over the last 6 days.
    history = [
        Reservation(user=user, team=team, start=now - timedelta(days=d + 1), end=now - timedelta(days=d + 1) + slot,
                    gpu_count=2, status="completed")
        for k, (team, user) in enumerate(teams) for d in range(6) for _ in range(k + 1)
    ]
    Reservation.objects.bulk_create(history)
    # Every GPU booked for the two days from tomorrow, round robin over the teams.
    day = policy.floor_to_slot(now).replace(hour=0, minute=0) + timedelta(days=1)
    cells = [(g, day + s * slot) for s in range(int(timedelta(days=2) / slot)) for g in gpus]
    blockers = Reservation.objects.bulk_create(
        Reservation(user=teams[i % 20][1], team=teams[i % 20][0], start=start, end=start + slot, gpu_count=1)
        for i, (_, start) in enumerate(cells)
    )
    Allocation.objects.bulk_create(
        Allocation(reservation=r, gpu_id=g, start=r.start, end=r.end, live=True) for r, (g, _) in zip(blockers, cells)
    )
    # 1,000 waiting requests, 50 a team, each for a blocked GPU and slot, through the booking service.
    began = time.perf_counter()
    for i in range(1000):
        team, user = teams[i % 20]
        g, start = cells[(i * 7) % len(cells)]
        waiting = reservation_create(user=user, gpu_ids=[g], start=start, slots=1, waitlist=True, now=timezone.now())
        assert waiting.status == "waitlisted"
    setup_s = time.perf_counter() - began

    def quotas(over_half):
        # Written directly (bench set-up, not audited); an over team's 1 GPU-hour a week is far below
        # the two days of bookings it holds.
        TeamQuota.objects.all().delete()
        if over_half is not None:
            TeamQuota.objects.bulk_create(
                TeamQuota(team=team, weight=1 + k % 3, max_gpus=64,
                          gpu_hours_per_week=1 if over_half and k % 2 else 100_000)
                for k, (team, _) in enumerate(teams)
            )

    variants = {"no quota rows": None, "quotas, room to spare": False, "quotas, half the teams over": True}
    results = {name: {"seconds": [], "cpu": [], "statements": [], "order_s": []} for name in variants}
    quotas(False)
    waitlist_promote(now=timezone.now())  # warm up: connections, caches, imports
    for round_ in range(args.sweep_rounds):
        names = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in names:
            quotas(variants[name])
            started = time.perf_counter()
            order = selectors.waitlist_order(timezone.now())
            results[name]["order_s"].append(time.perf_counter() - started)
            assert len(order) == 1000
            promoted = []
            started, cpu = time.perf_counter(), time.process_time()
            sql = statements_of(lambda: promoted.extend(waitlist_promote(now=timezone.now())))
            results[name]["seconds"].append(time.perf_counter() - started)
            results[name]["cpu"].append(time.process_time() - cpu)
            results[name]["statements"].append(len(sql))
            assert promoted == [], promoted

    print(f"machine  : {machine()}; PostgreSQL {version}; {REPO.name}")
    print(f"setup    : 20 teams, {len(history)} completed bookings over the last 6 days, {len(cells)} bookings "
          f"filling 64 GPUs for 2 days, 1,000 waitlisted requests (50 a team; {setup_s:.1f} s to book them)")
    print(f"sweeps   : waitlist_promote over the 1,000, nothing promotable, {args.sweep_rounds} per variant, alternating")
    print(f"{'variant':28} {'sweep s best/median':>20} {'CPU s':>6} {'statements':>11} {'per request':>12} "
          f"{'waitlist_order ms':>18}")
    for name, r in results.items():
        best, median = min(r["seconds"]), statistics.median(r["seconds"])
        print(f"{name:28} {best:11.2f} / {median:6.2f} {statistics.median(r['cpu']):6.2f} {r['statements'][0]:11d} "
              f"{r['statements'][0] / 1000:12.2f} {statistics.median(r['order_s']) * 1000:18.1f}")
    print(f"(CPU s: this process's, median; PostgreSQL's not included. Load average at the end "
          f"{os.getloadavg()[0]:.2f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["booking", "sweep", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=8, help="booking rounds")
    parser.add_argument("--per-round", type=int, default=150, help="bookings per team and round")
    parser.add_argument("--sweep-rounds", type=int, default=3, help="sweeps per variant")
    args = parser.parse_args()
    if args.per_round % CHUNK:
        parser.error(f"--per-round must be a multiple of {CHUNK}")
    django_setup(ENV)
    if args.part in ("booking", "both"):
        booking_part(args)
    if args.part == "both":
        print()
    if args.part in ("sweep", "both"):
        sweep_part(args)


if __name__ == "__main__":
    main()
