import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone
from prometheus_client import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token

from ops.metrics import scrape
from reservations import services, tasks
from reservations.models import Node, Notice, Reservation
from reservations.selectors import usage_report
from serving.models import Replica, Serving
from routing.metrics import RouterMetrics
from serving.replica.metrics import ReplicaMetrics
from trainer.models import TrainingJob
from trainer.services import nodes_mark_lost

from ..support import NEXT_SLOT, book, client_for, make_user, wait_for
from ..workers import Worker, purge_central_queue

DASHBOARD = Path(settings.BASE_DIR) / "docs" / "ops" / "grafana-dashboard.json"
# What each node worker's exporter serves (README "Operations: GPU health and alerts").
NODE_EXPORTER_NAMES = {"gpu_utilization_percent", "gpu_temp_celsius", "gpu_memory_used_mib"}


def samples(text):
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scraped(now=None):
    return samples(generate_latest(scrape(now)).decode())


def value(found, name, **labels):
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


# --- who may scrape ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_answer_the_local_monitor_in_prometheus_text():
    response = Client().get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert value(samples(response.content.decode()), "gpu_scheduler_database_up") == 1


@pytest.mark.django_db
def test_metrics_refuse_an_address_not_listed_without_a_token():
    response = Client(REMOTE_ADDR="203.0.113.9").get("/metrics")

    assert response.status_code == 403
    assert b"gpu_scheduler" not in response.content


@pytest.mark.django_db
def test_metrics_refuse_a_wrong_bearer_token_and_answer_the_right_one(settings):
    settings.METRICS_BEARER_TOKEN = "s3cret-scrape-token"
    client = Client(REMOTE_ADDR="203.0.113.9")

    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Token s3cret-scrape-token").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token").status_code == 200


@pytest.mark.django_db
def test_a_listed_network_may_scrape_directly_and_a_forwarded_address_never_counts_even_behind_a_proxy(settings):
    settings.METRICS_ALLOWED_IPS = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")]
    forged = {"REMOTE_ADDR": "203.0.113.9", "HTTP_X_FORWARDED_FOR": "10.1.2.3"}
    # Through the proxy on the same machine: the peer is listed, the client it forwards is not.
    proxied = {"REMOTE_ADDR": "127.0.0.1", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}

    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200
    assert Client(**forged).get("/metrics").status_code == 403
    settings.NUM_PROXIES = 1
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    assert Client(**forged).get("/metrics").status_code == 403
    assert Client(**proxied).get("/metrics").status_code == 403
    assert Client(REMOTE_ADDR="10.1.2.3").get("/metrics").status_code == 200


@pytest.mark.django_db
def test_metrics_are_get_only():
    assert Client().post("/metrics").status_code == 405


# --- product gauges, read from the database -----------------------------------------------------


@pytest.mark.usefixtures("frozen")
def test_booking_and_cancelling_show_in_the_booking_gauges(cluster, owner):
    gpus = cluster["node1"]
    kept = book(owner, gpus[:1])
    cancelled = book(owner, gpus[1:2], start=NEXT_SLOT + timedelta(hours=2))
    book(owner, gpus[:1], waitlist=True)
    services.reservation_cancel(reservation_id=cancelled.pk, actor=owner)

    found = scraped()

    assert value(found, "gpu_scheduler_bookings", status="confirmed", priority="normal") == 1
    assert value(found, "gpu_scheduler_bookings", status="cancelled", priority="normal") == 1
    assert value(found, "gpu_scheduler_bookings", status="waitlisted", priority="normal") == 1
    assert value(found, "gpu_scheduler_bookings", status="active", priority="high") == 0
    assert value(found, "gpu_scheduler_waitlist_length") == 1
    assert Reservation.objects.get(pk=kept.pk).status == Reservation.Status.CONFIRMED


@pytest.mark.usefixtures("frozen")
def test_a_job_that_ran_shows_as_used_gpu_hours_beside_the_booked_ones(cluster, owner):
    booking = book(owner, cluster["node1"][:2])  # 10:00-12:00 on two GPUs
    TrainingJob.objects.create(
        reservation=booking, spec={}, epochs=1, status=TrainingJob.Status.COMPLETED,
        started_at=NEXT_SLOT + timedelta(minutes=30), ended_at=NEXT_SLOT + timedelta(minutes=90),
    )

    found = scraped(now=NEXT_SLOT + timedelta(hours=3))

    assert value(found, "gpu_scheduler_booked_gpu_hours", window="24h") == pytest.approx(4)
    assert value(found, "gpu_scheduler_used_gpu_hours", window="24h") == pytest.approx(2)
    assert value(found, "gpu_scheduler_used_gpu_hours", window="7d") == pytest.approx(2)
    assert value(found, "gpu_scheduler_jobs", status="completed") == 1
    # A day and a half later the 24-hour window has left it behind; the week still holds it.
    later = scraped(now=NEXT_SLOT + timedelta(hours=36))
    assert value(later, "gpu_scheduler_used_gpu_hours", window="24h") == 0
    assert value(later, "gpu_scheduler_booked_gpu_hours", window="7d") == pytest.approx(4)


@pytest.mark.usefixtures("frozen")
def test_a_running_job_counts_up_to_now_and_a_node_shows_its_heartbeat_age(cluster, owner):
    booking = book(owner, cluster["node2"][:1])
    TrainingJob.objects.create(
        reservation=booking, spec={}, epochs=1, status=TrainingJob.Status.RUNNING, started_at=NEXT_SLOT
    )
    node = cluster["node2"][0].node
    node.last_heartbeat = NEXT_SLOT
    node.save()

    found = scraped(now=NEXT_SLOT + timedelta(minutes=45))

    assert value(found, "gpu_scheduler_used_gpu_hours", window="24h") == pytest.approx(0.75)
    assert value(found, "gpu_scheduler_jobs", status="running") == 1
    assert value(found, "gpu_scheduler_node_heartbeat_age_seconds", node="node2") == 45 * 60



@pytest.mark.usefixtures("frozen")
def test_a_job_interrupted_by_a_lost_node_counts_until_then_alike_in_metrics_and_the_usage_report(
    cluster, owner, settings
):
    settings.NODE_LOST_SECONDS = 60
    booking = book(owner, cluster["node2"][:2])  # 10:00-12:00 on two GPUs
    job = TrainingJob.objects.create(
        reservation=booking, spec={}, epochs=1, status=TrainingJob.Status.RUNNING, started_at=NEXT_SLOT,
        node=cluster["node2"][0].node,
    )
    Node.objects.filter(pk=job.node_id).update(online=True, last_heartbeat=NEXT_SLOT + timedelta(minutes=28))

    assert nodes_mark_lost(now=NEXT_SLOT + timedelta(minutes=30)) == 1
    now = NEXT_SLOT + timedelta(hours=3)
    report = usage_report(start=now - timedelta(hours=24), end=now, now=now)

    assert TrainingJob.objects.get(pk=job.pk).ended_at == NEXT_SLOT + timedelta(minutes=30)
    assert [row["used_gpu_hours"] for row in report] == [1.0]
    assert value(scraped(now=now), "gpu_scheduler_used_gpu_hours", window="24h") == pytest.approx(1.0)


@pytest.mark.usefixtures("frozen")
def test_a_preemption_and_its_notices_show_in_the_preemption_and_delivery_counts(cluster, owner, high_booker):
    owner.email = "owner@example.com"
    owner.save()
    victim = book(owner, cluster["node1"][:1], priority="low", auto_rebook=False)
    book(high_booker, cluster["node1"][:1], priority="high")
    notice = Notice.objects.get(user=owner, reservation=victim)
    services.notice_email(notice_id=notice.pk)
    services.notice_webhook_gave_up(notice_id=notice.pk, error="HTTPError: 502")

    found = scraped()

    for window in ("24h", "7d"):
        assert value(found, "gpu_scheduler_preemptions", outcome="scheduled", window=window) == 1
        assert value(found, "gpu_scheduler_preemptions", outcome="reclaimed", window=window) == 0
        assert value(found, "gpu_scheduler_notice_deliveries", channel="email", result="delivered", window=window) == 1
        assert value(found, "gpu_scheduler_notice_deliveries", channel="webhook", result="failed", window=window) == 1
        assert value(found, "gpu_scheduler_notice_deliveries", channel="webhook", result="delivered", window=window) == 0
    # Two days on, the day's window has left them behind and the week's still holds them.
    later = scraped(now=timezone.now() + timedelta(days=2))
    assert value(later, "gpu_scheduler_preemptions", outcome="scheduled", window="24h") == 0
    assert value(later, "gpu_scheduler_preemptions", outcome="scheduled", window="7d") == 1
    assert value(later, "gpu_scheduler_notice_deliveries", channel="email", result="delivered", window="24h") == 0
    assert value(later, "gpu_scheduler_notice_deliveries", channel="email", result="delivered", window="7d") == 1


@pytest.mark.usefixtures("frozen")
def test_finished_bookings_and_jobs_leave_the_gauges_a_week_after_their_end_and_open_ones_stay(cluster, owner):
    """What a scrape reads is bounded by its window: history older than a week is not recounted."""
    finished = book(owner, cluster["node1"][:1])  # 10:00-12:00
    TrainingJob.objects.create(reservation=finished, spec={}, epochs=1, status=TrainingJob.Status.COMPLETED,
                               started_at=NEXT_SLOT, ended_at=NEXT_SLOT + timedelta(hours=1))
    Reservation.objects.filter(pk=finished.pk).update(status=Reservation.Status.COMPLETED)
    waiting = book(owner, cluster["node1"][1:2], start=NEXT_SLOT + timedelta(days=7))
    TrainingJob.objects.create(reservation=waiting, spec={}, epochs=1)  # queued
    never_ran = book(owner, cluster["node1"][2:3])  # 10:00-12:00, its job left queued when it ended
    TrainingJob.objects.create(reservation=never_ran, spec={}, epochs=1)

    within = scraped(now=NEXT_SLOT + timedelta(days=6))
    beyond = scraped(now=NEXT_SLOT + timedelta(days=8))

    assert value(within, "gpu_scheduler_bookings", status="completed", priority="normal") == 1
    assert value(within, "gpu_scheduler_jobs", status="completed") == 1
    assert value(within, "gpu_scheduler_jobs", status="queued") == 2
    assert value(beyond, "gpu_scheduler_bookings", status="completed", priority="normal") == 0
    assert value(beyond, "gpu_scheduler_jobs", status="completed") == 0
    # Open bookings count whenever they began, a waiting job while its booking is open or a week after.
    assert value(beyond, "gpu_scheduler_bookings", status="confirmed", priority="normal") == 2
    assert value(beyond, "gpu_scheduler_jobs", status="queued") == 1

@pytest.mark.usefixtures("frozen")
def test_each_teams_quota_and_what_it_booked_and_borrowed_this_quota_week_show_on_a_scrape(
    cluster, team, owner, outsider, staff
):
    services.team_quota_set(team=team, actor=staff, gpu_hours_per_week=4)
    book(owner, cluster["node1"][:2])  # 10:00-12:00 on two GPUs: the week's 4 GPU-hours
    assert book(owner, cluster["node1"][2:3], borrow=True).borrowed  # over it: 2 borrowed
    book(outsider, cluster["node2"][:1])  # Language has no quota
    book(outsider, cluster["node2"][:1], start=NEXT_SLOT + timedelta(days=7))  # next week's

    found = samples(Client().get("/metrics").content.decode())

    assert value(found, "gpu_scheduler_team_quota_gpu_hours", team="vision") == 4
    assert ("gpu_scheduler_team_quota_gpu_hours", (("team", "nlp"),)) not in found
    assert value(found, "gpu_scheduler_team_booked_gpu_hours", team="vision") == pytest.approx(4)
    assert value(found, "gpu_scheduler_team_borrowed_gpu_hours", team="vision") == pytest.approx(2)
    assert value(found, "gpu_scheduler_team_booked_gpu_hours", team="nlp") == pytest.approx(2)
    assert ("gpu_scheduler_team_borrowed_gpu_hours", (("team", "nlp"),)) in found
    # A week later only that week counts: Language's booking of then, nothing of Vision's.
    later = scraped(now=NEXT_SLOT + timedelta(days=7, hours=1))
    assert value(later, "gpu_scheduler_team_booked_gpu_hours", team="nlp") == pytest.approx(2)
    assert ("gpu_scheduler_team_booked_gpu_hours", (("team", "vision"),)) in later
    assert value(later, "gpu_scheduler_team_booked_gpu_hours", team="vision") == 0
    assert value(later, "gpu_scheduler_team_borrowed_gpu_hours", team="vision") == 0


# --- event metrics, recorded where they happen ---------------------------------------------------


@pytest.mark.django_db
def test_an_api_call_is_timed_under_its_view_name_not_its_path(owner):
    before = scraped()
    client_for(owner).get("/api/v1/reservations/")
    client_for(owner).get("/api/v1/reservations/999999/")

    found = scraped()

    name = "gpu_scheduler_http_request_duration_seconds_count"
    assert value(found, name, view="reservation-list", method="GET", status="2xx") - value(
        before, name, view="reservation-list", method="GET", status="2xx"
    ) == 1
    assert value(found, name, view="reservation-detail", method="GET", status="4xx") - value(
        before, name, view="reservation-detail", method="GET", status="4xx"
    ) == 1
    assert not any("999999" in str(labels) for (_, labels) in found)


@pytest.mark.django_db
def test_a_path_no_url_matches_is_timed_as_unmatched_whatever_its_path():
    before = scraped()
    Client().get("/no/such/page-12345")

    found = scraped()

    name = "gpu_scheduler_http_request_duration_seconds_count"
    labels = dict(view="unmatched", method="GET", status="4xx")
    assert value(found, name, **labels) - value(before, name, **labels) == 1
    assert not any("12345" in str(labels) for (_, labels) in found)


@pytest.mark.usefixtures("frozen")
def test_the_tick_records_its_duration_and_the_bookings_it_moved(cluster, owner, frozen):
    book(owner, cluster["node1"][:1])
    before = scraped()
    frozen.move_to(NEXT_SLOT + timedelta(minutes=1))

    tasks.tick()

    found = scraped()
    assert value(found, "gpu_scheduler_tick_duration_seconds_count") - value(
        before, "gpu_scheduler_tick_duration_seconds_count"
    ) == 1
    assert value(found, "gpu_scheduler_booking_transitions_total", to="active") - value(
        before, "gpu_scheduler_booking_transitions_total", to="active"
    ) == 1


# --- several gunicorn workers --------------------------------------------------------------------


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _per_process_counts(directory, view):
    """Requests each process counted for `view`, read from its own file."""
    counts = {}
    for path in Path(directory).glob("histogram_*.db"):
        for family in MultiProcessCollector.merge([str(path)]):
            for s in family.samples:
                if s.name.endswith("_count") and s.labels.get("view") == view and s.value:
                    counts[path.name] = counts.get(path.name, 0) + s.value
    return counts


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_under_gunicorn_with_two_workers_metrics_add_up_every_workers_requests_and_the_central_workers_tick(tmp_path):
    owner = make_user("owner")
    token = Token.objects.create(user=owner).key
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    (multiproc / "counter_999999999.db").write_bytes(b"")  # a dead process's file from an earlier run
    port = _free_port()
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "WEB_PORT": str(port),
        "WEB_WORKERS": "2",
    }
    log = open(tmp_path / "gunicorn.log", "wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "scheduler/gunicorn.conf.py", "scheduler.wsgi"],
        cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(f"{base}/metrics"), 60, "gunicorn to answer")
        assert not (multiproc / "counter_999999999.db").exists()
        headers = {"Authorization": f"Token {token}"}

        def call(_):
            response = requests.get(f"{base}/api/v1/reservations/", headers=headers, timeout=30)
            assert response.status_code == 200

        sent = 0
        # Concurrent requests, so both (single-threaded) workers answer some; more rounds if one
        # worker happened to take them all.
        while len(_per_process_counts(multiproc, "reservation-list")) < 2 and sent < 400:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(call, range(40)))
            sent += 40

        per_process = _per_process_counts(multiproc, "reservation-list")
        found = samples(requests.get(f"{base}/metrics", timeout=30).text)
        count = value(
            found, "gpu_scheduler_http_request_duration_seconds_count", view="reservation-list", method="GET",
            status="2xx",
        )

        # The central Celery worker on the web machine, given the same directory: its tick shows too.
        purge_central_queue()
        worker = Worker(tmp_path / "worker.log", ["celery"], "central", PROMETHEUS_MULTIPROC_DIR=str(multiproc))
        worker.start()
        try:
            tasks.tick.delay()
            ticked = wait_for(
                lambda: value(
                    samples(requests.get(f"{base}/metrics", timeout=30).text), "gpu_scheduler_tick_duration_seconds_count"
                ),
                60, "the worker's tick in the web's /metrics",
            )
        finally:
            worker.stop()
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert len(per_process) == 2, per_process
    assert sum(per_process.values()) == sent
    assert count == sent
    assert ticked == 1
    assert value(found, "gpu_scheduler_database_up") == 1


def _answers(url):
    try:
        return requests.get(url, timeout=10).status_code == 200
    except requests.RequestException:  # not listening yet, or still loading the app
        return False


# --- the Grafana dashboard -----------------------------------------------------------------------


@pytest.mark.django_db
def test_every_metric_the_dashboard_reads_is_one_that_is_exported():
    exported = set(NODE_EXPORTER_NAMES)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    for family in text_string_to_metric_families(generate_latest(scrape()).decode()):
        exported.add(family.name)
        exported.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    expressions += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]

    registries = (ReplicaMetrics(1).registry, RouterMetrics().registry)
    for family in (f for r in registries for f in text_string_to_metric_families(generate_latest(r).decode())):
        exported.add(family.name)
        exported.update(family.name + suffix for suffix in suffixes.get(family.type, ()))

    read = {name for expr in expressions for name in re.findall(r"\b(?:gpu|replica|router)_[a-z0-9_]+", expr)}

    assert {"gpu_utilization_percent", "gpu_scheduler_job_stop_latency_seconds_bucket", "replica_resident_bytes",
            "router_request_seconds_bucket"} <= read
    assert read - exported == set()


@pytest.mark.django_db
def test_prometheus_finds_the_live_replicas_through_the_web_with_the_metrics_access_rule(
    settings, cluster, owner, defects, frozen
):
    gpu = cluster["node1"][0]
    reservation = book(owner, [gpu], work={"serve": {"models": ["defects"], "preload": []}})
    serving = Serving.objects.get(reservation=reservation)
    live = Replica.objects.create(serving=serving, gpu=gpu, node=gpu.node, device="cuda:0", address="10.0.0.7:9501",
                                  token="t", state="ready", memory_budget=1)
    Replica.objects.create(serving=serving, gpu=cluster["node1"][1], node=gpu.node, device="cuda:1",
                           address="10.0.0.7:9502", token="t", state="stopped", memory_budget=1)
    settings.METRICS_BEARER_TOKEN = "s3cret-scrape-token"

    assert Client(REMOTE_ADDR="203.0.113.9").get("/metrics/replicas").status_code == 403
    found = Client(REMOTE_ADDR="203.0.113.9").get(
        "/metrics/replicas", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token"
    ).json()

    assert found == [{
        "targets": ["10.0.0.7:9501"],
        "labels": {"replica": str(live.pk), "node": "node1", "device": "cuda:0", "team": owner.teams.first().slug,
                   "reservation": str(reservation.pk)},
    }]
