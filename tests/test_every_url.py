"""Every URL of the product, on the quick start's demo data (`seed_demo`), signed in as a demo user of
each role and as nobody: no 5xx, and the status each of them should get. bin/test runs it on
PostgreSQL and, in the SQLite lane, on the quick start's own settings (SQLite, the filesystem broker),
so a page that only works on one database fails here. A URL added without an entry below fails
test_every_url_pattern_is_checked, so this stays every URL.

The demo users fall in four roles toward the bookings, jobs, models and replicas made below, all of
bob's (team vision): bob owns them, alice is an admin of his team, carol (like dave, erin and ci-bot)
is of another team, and admin is staff; and there is nobody signed in."""

from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from axes.models import AccessFailureLog
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.urls import URLResolver, get_resolver
from django.utils import timezone
from rest_framework.authtoken.models import Token, TokenProxy

from reservations import policy, services
from reservations.models import GPU, AuditEntry, Notice
from routing.models import GpuModelWeight, GpuWeight
from serving.models import Model, ModelVersion, Replica
from trainer.dataset import make_dataset
from trainer.models import TrainingJob
from web.services import calendar_feed_for

pytestmark = pytest.mark.django_db

PASSWORD = "demo-password"  # seed_demo's
ANONYMOUS, OWNER, TEAM_ADMIN, OUTSIDER, STAFF = "anonymous", "owner", "team admin", "outsider", "staff"
# One demo user of each role (the other outsiders, dave, erin and ci-bot, differ from carol in no
# right a URL checks: ci-bot's high priority is the booking rules' concern).
ROLE_OF = {None: ANONYMOUS, "bob": OWNER, "alice": TEAM_ADMIN, "carol": OUTSIDER, "admin": STAFF}
SIGNED_IN = (OWNER, TEAM_ADMIN, OUTSIDER, STAFF)


def expect(anonymous, *, owner=None, team_admin=None, outsider=None, staff=None, signed_in=None):
    """Statuses by role: `signed_in` for each signed-in role not named."""
    named = {OWNER: owner, TEAM_ADMIN: team_admin, OUTSIDER: outsider, STAFF: staff}
    return {ANONYMOUS: anonymous, **{role: named[role] or signed_in for role in SIGNED_IN}}


PAGE = expect(302, signed_in=200)  # sign-in first, then everyone's
API = expect(401, signed_in=200)
STAFF_PAGE = expect(302, signed_in=403, staff=200)
STAFF_API = expect(401, signed_in=403, staff=200)
# A booking's job, model or replica: its team and staff; others learn nothing of it.
TEAMS_PAGE = expect(302, signed_in=200, outsider=404)
TEAMS_API = expect(401, signed_in=200, outsider=404)


@dataclass
class Check:
    """One request and the status each role gets. `url` is a path, or a function of the Demo."""

    pattern: str  # the URL pattern (or admin URL name) this covers
    url: object
    expected: dict
    method: str = "get"
    data: object = None  # a body (a dict: form fields for pages, JSON for the API)
    api: bool = False  # signed in with the user's API token rather than a session
    location: str = ""  # a redirect's target starts with this (for the anonymous: the sign-in page)
    extra: dict = field(default_factory=dict)


class Demo:
    """seed_demo's cluster, teams, users and week of bookings, and what else the URLs need: bookings of
    bob's (one to look at and one per change, so each change has its own), a training job with a
    checkpoint, a notice, a calendar feed, registered models, a serving booking with a replica (no
    process: it has stopped, as in a quick start with no serving running), series of bob's (one to look at and change from its page, one per change through the API)."""

    def __init__(self, data_root):
        call_command("seed_demo", stdout=open("/dev/null", "w"))
        User = get_user_model()
        self.users = {u.username: u for u in User.objects.all()}
        self.bob = self.users["bob"]
        self.now = timezone.now()
        self.gpus = list(GPU.objects.select_related("node").order_by("node__hostname", "index"))
        self.gpu, self.node = self.gpus[0], self.gpus[0].node
        # Beyond seed_demo's week: these days are free.
        self.far = policy.ceil_to_slot(self.now) + timedelta(days=14)
        data = make_dataset(data_root / "demo", images=8, size=64)
        self.booking = self._book(0, title="a look")
        self.to_cancel, self.to_move, self.to_transfer = (self._book(i) for i in (1, 2, 3))
        self.api_cancel, self.api_move, self.api_transfer = (self._book(i) for i in (4, 5, 6))
        self.trained = self._book(7, work={"job": {"model": "yolov8n.yaml", "data": str(data), "epochs": 2, "imgsz": 64, "batch": 4}})
        self.job = self.trained.job
        checkpoint = settings.TRAINING_RUNS_DIR / f"job-{self.job.pk}" / "last.pt"
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_bytes(b"a checkpoint")
        TrainingJob.objects.filter(pk=self.job.pk).update(checkpoint=str(checkpoint), checkpoint_epoch=1)
        self.notice = Notice.objects.create(
            user=self.bob, reservation=self.booking, kind=Notice.Kind.WAITLIST_CONFIRMED, message="Confirmed."
        )
        team = self.team = self.booking.team
        # Far more than the checks book: the team's endpoints and the quota's admin pages have one to show.
        services.team_quota_set(team=team, actor=self.users["admin"], gpu_hours_per_week=100_000)
        self.feed, self.team_feed = calendar_feed_for(user=self.bob), calendar_feed_for(user=self.bob, team=team)
        self.model = Model.objects.create(team=team, name="boxes", created_by=self.bob)
        self.spare_model = Model.objects.create(team=team, name="spare", created_by=self.users["alice"])
        for model in (self.model, self.spare_model):
            ModelVersion.objects.create(
                model=model, version=1, imgsz=64, class_names=["square"], size=1, sha256=f"{model.pk:064d}",
                created_by=model.created_by,
            )
        serving = self._book(8, work={"serve": {"models": ["boxes"]}}).serving
        self.replica = Replica.objects.create(
            serving=serving, gpu=self.gpu, node=self.node, device="cpu", address="127.0.0.1:9", token="t",
            state=Replica.State.STOPPED, memory_budget=1 << 30,
        )
        # Recurring bookings of bob's: one to look at, and one per change through the API.
        self.series, self.api_series_cancel, self.api_series_change, self.api_series_transfer = (
            services.series_create(
                user=self.bob, gpu_ids=[self.gpu.pk], start=self.far + offset * policy.slot_length(), slots=1,
                rule="FREQ=DAILY;COUNT=2", now=self.now,
            ).series
            for offset in (60, 61, 62, 63)
        )
        self.audit_entry = AuditEntry.objects.order_by("id").first()
        # A row in each admin list the demo leaves empty.
        Group.objects.create(name="operators")
        GpuWeight.objects.create(gpu=self.gpu, weight=2)
        GpuModelWeight.objects.create(gpu_model="NVIDIA A100-SXM4-80GB", weight=2)
        AccessFailureLog.objects.create(username="bob", ip_address="192.0.2.1", user_agent="curl", path_info="/login/")

    def _book(self, offset, **kwargs):
        return services.reservation_create(
            user=self.bob, gpu_ids=[self.gpu.pk], start=self.far + offset * policy.slot_length(), slots=1,
            now=self.now, **kwargs,
        )

    def slot(self, offset):
        """The day and slot (UTC, the viewer's zone without a cookie) of a free slot `offset` on."""
        start = self.far + offset * policy.slot_length()
        return {"date": start.date().isoformat(), "slot": start.strftime("%H:%M")}

    def local(self, offset):
        """A datetime-local field's value (the viewer's zone: UTC without a cookie)."""
        return (self.far + offset * policy.slot_length()).strftime("%Y-%m-%dT%H:%M")

    def iso(self, offset):
        return (self.far + offset * policy.slot_length()).isoformat().replace("+00:00", "Z")


def page_checks():
    window = "start={}&end={}"
    return [
        # Someone signed in is sent on to the calendar.
        Check("login/", "/login/", expect(200, signed_in=302)),
        Check("login/", "/login/", expect(200, signed_in=302), method="post",
              data={"username": "nobody", "password": "wrong"}),
        Check("favicon.ico", "/favicon.ico", expect(302, signed_in=302), location="/static/favicon"),
        Check("logout/", "/logout/", expect(302, signed_in=302), method="post"),
        Check("", "/", PAGE, location="/login/"),
        Check("calendar/events/", lambda d: "/calendar/events/?" + window.format(d.iso(0), d.iso(12)), PAGE),
        Check("calendar/events/", "/calendar/events/?start=yesterday", expect(302, signed_in=400)),
        Check("book/", "/book/", expect(302, signed_in=201), method="post",
              data=lambda d: {"gpus": [d.gpus[4].pk], **d.slot(20), "slots": 1, "title": "from the form",
                              "priority": "normal", "auto_rebook": "on"}),
        # The booking form's quota preview: every demo team has a quota or none, each answers.
        Check("book/quota-preview/", lambda d: "/book/quota-preview/?" + urlencode({"gpus": d.gpus[4].pk, **d.slot(20), "slots": 2}), PAGE),
        Check("book/quota-preview/", "/book/quota-preview/?gpus=x&slots=1&date=2030-01-07&slot=10:00", expect(302, signed_in=400)),
        # The resume-from search: each finds their own teams' jobs; a search longer than a title is a 400.
        Check("book/resume-options/", "/book/resume-options/?q=run", PAGE),
        Check("book/resume-options/", "/book/resume-options/?q=" + "x" * 101, expect(302, signed_in=400)),
        # The form's preview of a repeat's occurrences: everyone's own team's standing; a bad value is a 400.
        Check("book/series-preview/", lambda d: "/book/series-preview/?" + urlencode(
            {"gpus": d.gpus[4].pk, **d.slot(20), "slots": 1, "repeat": "daily", "ends": "count", "count": 5}), PAGE),
        Check("book/series-preview/", lambda d: "/book/series-preview/?" + urlencode(
            {"gpus": d.gpus[4].pk, **d.slot(20), "slots": 1, "repeat": "daily", "ends": "count", "count": 0}),
            expect(302, signed_in=400)),
        # A series' page: everyone signed in (the calendar is shared); changes: its owner, a team admin
        # and staff (with a reason when not theirs); the transfer last, as it makes alice the owner.
        Check("series/<int:pk>/", lambda d: f"/series/{d.series.pk}/", PAGE),
        Check("series/<int:pk>/", "/series/999999/", expect(302, signed_in=404)),
        Check("series/<int:pk>/change/", lambda d: f"/series/{d.series.pk}/change/",
              expect(302, signed_in=302, outsider=403), method="post",
              data={"title": "nightly v2", "priority": "low", "reason": "renamed"}),
        Check("series/<int:pk>/cancel/", lambda d: f"/series/{d.series.pk}/cancel/",
              expect(302, signed_in=302, outsider=403), method="post",
              data=lambda d: {"scope": "one", "occurrence": d.series.first_start.isoformat(), "reason": "not that night"}),
        Check("series/<int:pk>/cancel/", lambda d: f"/series/{d.series.pk}/cancel/", expect(302, signed_in=400),
              method="post", data={"scope": "one", "occurrence": "tonight"}),
        # A dataset outside the data roots: the form's 400, for anyone (the spec is checked first).
        Check("series/<int:pk>/job/", lambda d: f"/series/{d.series.pk}/job/", expect(302, signed_in=400),
              method="post", data={"train": "on", "model": "yolov8n.yaml", "data": "/etc/passwd", "epochs": 3}),
        Check("series/<int:pk>/job/", lambda d: f"/series/{d.series.pk}/job/",
              expect(302, signed_in=302, outsider=403), method="post", data={"reason": "no job after all"}),
        Check("series/<int:pk>/transfer/", lambda d: f"/series/{d.series.pk}/transfer/",
              expect(302, signed_in=302, outsider=403), method="post", data={"to": "alice", "reason": "hers now"}),
        Check("bookings/", "/bookings/", PAGE),
        Check("bookings/<int:pk>/", lambda d: f"/bookings/{d.booking.pk}/", PAGE),
        Check("bookings/<int:pk>/", "/bookings/999999/", expect(302, signed_in=404)),
        Check("bookings/<int:pk>/job/", lambda d: f"/bookings/{d.trained.pk}/job/", TEAMS_PAGE),
        Check("bookings/<int:pk>/checkpoint/", lambda d: f"/bookings/{d.trained.pk}/checkpoint/", TEAMS_PAGE),
        Check("bookings/<int:pk>/cancel/", lambda d: f"/bookings/{d.to_cancel.pk}/cancel/",
              expect(302, signed_in=302, outsider=403), method="post", data={"reason": "not needed"}),
        Check("bookings/<int:pk>/transfer/", lambda d: f"/bookings/{d.to_transfer.pk}/transfer/",
              expect(302, signed_in=302, outsider=403), method="post", data={"to": "alice", "reason": "hers now"}),
        Check("bookings/<int:pk>/move/", lambda d: f"/bookings/{d.to_move.pk}/move/",
              expect(302, signed_in=302, outsider=403), method="post",
              data=lambda d: {"start": d.local(30), "slots": 1, "reason": "later"}),
        Check("notices/", "/notices/", PAGE),
        # Only one's own notices are marked; another's id is no error, and marks nothing.
        Check("notices/read/", "/notices/read/", expect(302, signed_in=302), method="post",
              data=lambda d: {"ids": str(d.notice.pk)}),
        Check("notices/read/", "/notices/read/", expect(302, signed_in=400), method="post", data={"ids": "all"}),
        Check("profile/", "/profile/", PAGE),
        Check("profile/api-token/rotate/", "/profile/api-token/rotate/", expect(302, signed_in=302), method="post"),
        Check("profile/feeds/<int:feed_id>/rotate/", lambda d: f"/profile/feeds/{d.team_feed.pk}/rotate/",
              expect(302, signed_in=404, owner=302), method="post"),
        Check("reports/usage/", "/reports/usage/", STAFF_PAGE),
        Check("ical/<str:token>.ics", lambda d: f"/ical/{d.feed.token}.ics", expect(200, signed_in=200)),
        Check("ical/<str:token>.ics", "/ical/" + "x" * 43 + ".ics", expect(404, signed_in=404)),
        Check("metrics", "/metrics", expect(200, signed_in=200)),
        Check("metrics", "/metrics", expect(403, signed_in=403), extra={"REMOTE_ADDR": "192.0.2.1"}),
        Check("metrics/replicas", "/metrics/replicas", expect(200, signed_in=200)),
        Check("api/docs/", "/api/docs/", expect(200, signed_in=200)),
        Check("api/schema/", "/api/schema/", expect(200, signed_in=200)),
    ]


def api_checks():
    v1 = "/api/v1/"
    checks = [
        Check("api/v1/", v1, API),
        Check("api/v1/availability/", v1 + "availability/?gpu_count=1&slots=1", API),
        Check("api/v1/availability/", v1 + "availability/?gpu_count=x", expect(401, signed_in=400)),
        Check("api/v1/status/", v1 + "status/", API),
        Check("api/v1/me/", v1 + "me/", API),
        Check("api/v1/auth/token/", v1 + "auth/token/", expect(400, signed_in=400), method="post",
              data={"username": "bob", "password": "wrong"}, api=True),
        Check("api/v1/reports/usage/", v1 + "reports/usage/", STAFF_API),
        Check("api/v1/reports/usage/", v1 + "reports/usage/?start=yesterday", expect(401, signed_in=403, staff=400)),
    ]
    for name, url in (("gpus", lambda d: d.gpu.pk), ("nodes", lambda d: d.node.pk),
                      ("reservations", lambda d: d.booking.pk), ("series", lambda d: d.series.pk), ("jobs", None)):
        checks += [Check(f"api/v1/^{name}/$", f"{v1}{name}/", API)]
        if name != "jobs":
            checks += [
                Check(f"api/v1/^{name}/(?P<pk>[^/.]+)/$", lambda d, url=url, name=name: f"{v1}{name}/{url(d)}/", API),
                Check(f"api/v1/^{name}/(?P<pk>[^/.]+)/$", f"{v1}{name}/999999/", expect(401, signed_in=404)),
                # No format suffixes: a ".json" URL is no URL.
                Check(f"api/v1/^{name}/(?P<pk>[^/.]+)/$", f"{v1}{name}/1.json", expect(404, signed_in=404)),
            ]
    changes = [
        ("cancel", "api_cancel", {"reason": "not needed"}, 200),
        ("move", "api_move", lambda d: {"start": d.iso(40), "slots": 1, "reason": "later"}, 200),
        ("transfer", "api_transfer", {"to": "alice", "reason": "hers now"}, 200),
    ]
    for action, booking, data, done in changes:
        checks.append(Check(
            f"api/v1/^reservations/(?P<pk>[^/.]+)/{action}/$",
            lambda d, booking=booking, action=action: f"{v1}reservations/{getattr(d, booking).pk}/{action}/",
            expect(401, signed_in=done, outsider=403), method="post", data=data, api=True,
        ))
    series_changes = [
        ("cancel", "api_series_cancel", {"scope": "all", "reason": "not needed"}),
        ("change", "api_series_change", {"title": "renamed", "reason": "clearer"}),
        ("transfer", "api_series_transfer", {"to": "alice", "reason": "hers now"}),
    ]
    for action, series, data in series_changes:
        checks.append(Check(
            f"api/v1/^series/(?P<pk>[^/.]+)/{action}/$",
            lambda d, series=series, action=action: f"{v1}series/{getattr(d, series).pk}/{action}/",
            expect(401, signed_in=200, outsider=403), method="post", data=data, api=True,
        ))
    checks += [
        Check("api/v1/^series/$", v1 + "series/", expect(401, signed_in=201), method="post",
              data=lambda d: {"gpus": [d.gpus[6].pk], "start": d.iso(70), "slots": 1, "recurrence": "FREQ=DAILY;COUNT=2"},
              api=True),
        Check("api/v1/^series/$", v1 + "series/", expect(401, signed_in=400), method="post",
              data=lambda d: {"gpus": [d.gpus[6].pk], "start": d.iso(70), "slots": 1, "recurrence": "FREQ=HOURLY"},
              api=True),
        Check("api/v1/^reservations/$", v1 + "reservations/", expect(401, signed_in=201), method="post",
              data=lambda d: {"gpus": [d.gpus[6].pk], "start": d.iso(50), "slots": 1}, api=True),
        Check("api/v1/^reservations/$", v1 + "reservations/", expect(401, signed_in=400), method="post",
              data={"gpus": "all of them"}, api=True),
        Check("api/v1/^notices/$", v1 + "notices/", API),
        Check("api/v1/^notices/(?P<pk>[^/.]+)/$", lambda d: f"{v1}notices/{d.notice.pk}/", expect(401, signed_in=404, owner=200)),
        Check("api/v1/^teams/$", v1 + "teams/", API),
        Check("api/v1/^teams/(?P<slug>[^/.]+)/$", lambda d: f"{v1}teams/{d.team.slug}/", TEAMS_API),
        Check("api/v1/^teams/(?P<slug>[^/.]+)/$", f"{v1}teams/no-such-team/", expect(401, signed_in=404)),
        Check("api/v1/^teams/(?P<slug>[^/.]+)/usage/$", lambda d: f"{v1}teams/{d.team.slug}/usage/", TEAMS_API),
        Check("api/v1/^teams/(?P<slug>[^/.]+)/usage/$", lambda d: f"{v1}teams/{d.team.slug}/usage/?week=2030-W60",
              expect(401, signed_in=400, outsider=404)),
        Check("api/v1/^audit/$", v1 + "audit/", STAFF_API),
        Check("api/v1/^audit/(?P<pk>[^/.]+)/$", lambda d: f"{v1}audit/{d.audit_entry.pk}/", STAFF_API),
        Check("api/v1/^jobs/(?P<pk>[^/.]+)/$", lambda d: f"{v1}jobs/{d.job.pk}/", TEAMS_API),
        Check("api/v1/^jobs/(?P<pk>[^/.]+)/log/$", lambda d: f"{v1}jobs/{d.job.pk}/log/", TEAMS_API),
        Check("api/v1/^models/$", v1 + "models/", API),
        # The job saved no best weights (its team), or is not one they may see (the others): 400 "job".
        Check("api/v1/^models/$", v1 + "models/", expect(401, signed_in=400), method="post",
              data=lambda d: {"job": d.job.pk, "name": "boxes-2"}, api=True),
        Check("api/v1/^models/(?P<pk>[0-9]+)/$", lambda d: f"{v1}models/{d.model.pk}/", TEAMS_API),
        # In use by the serving booking: refused while it serves.
        Check("api/v1/^models/(?P<pk>[0-9]+)/$", lambda d: f"{v1}models/{d.model.pk}/",
              expect(401, signed_in=409, outsider=404), method="delete", api=True),
        # Registered by alice: bob, a plain member, may not delete it; she, a team admin, and staff may.
        Check("api/v1/^models/(?P<pk>[0-9]+)/versions/(?P<version>[0-9]{1,9})/$",
              lambda d: f"{v1}models/{d.spare_model.pk}/versions/1/",
              expect(401, owner=403, team_admin=204, outsider=404, staff=204), method="delete", api=True),
        Check("api/v1/^replicas/$", v1 + "replicas/", API),
        Check("api/v1/^replicas/(?P<pk>[^/.]+)/$", lambda d: f"{v1}replicas/{d.replica.pk}/", TEAMS_API),
        # The replica has stopped: the client is told so (409), as it is when a booking ends.
        Check("api/v1/^replicas/(?P<pk>[^/.]+)/status/$", lambda d: f"{v1}replicas/{d.replica.pk}/status/",
              expect(401, signed_in=409, outsider=404)),
        Check("api/v1/^replicas/(?P<pk>[^/.]+)/models/(?P<ref>[^/]+)/predict/$",
              lambda d: f"{v1}replicas/{d.replica.pk}/models/boxes/predict/",
              expect(401, signed_in=409, outsider=404), method="post", data=b"\x89PNG", api=True,
              extra={"content_type": "image/png"}),
    ]
    for action in ("load", "unload"):
        checks.append(Check(
            f"api/v1/^replicas/(?P<pk>[^/.]+)/models/(?P<ref>[^/]+)/{action}/$",
            lambda d, action=action: f"{v1}replicas/{d.replica.pk}/models/boxes/{action}/",
            expect(401, signed_in=409, outsider=404), method="post", data={}, api=True,
        ))
    return checks


# What staff may not add in the admin (made by the services, the registry or django-axes), and what
# they may not delete there (bookings are cancelled, never deleted; the audit log is append-only).
NO_ADD = {"reservations.auditentry", "reservations.series", "serving.model", "serving.modelversion", "serving.serving", "serving.replica",
          "axes.accessattempt", "axes.accesslog", "axes.accessfailurelog"}
NO_DELETE = {"reservations.auditentry", "reservations.reservation", "reservations.series", "serving.serving", "serving.replica"}
ADMIN = expect(302, signed_in=302, staff=200)  # the admin's own sign-in for everyone but staff


def admin_checks():
    checks = [
        Check("admin:index", "/admin/", ADMIN, location="/admin/login/"),
        Check("admin:login", "/admin/login/", expect(200, signed_in=200, staff=302)),
        Check("admin:logout", "/admin/logout/", expect(302, signed_in=302), method="post"),
        Check("admin:password_change", "/admin/password_change/", ADMIN),
        Check("admin:password_change_done", "/admin/password_change/done/", ADMIN),
        Check("admin:jsi18n", "/admin/jsi18n/", ADMIN),
        Check("admin:autocomplete", "/admin/autocomplete/", expect(302, signed_in=302, staff=403)),
        Check("admin:view_on_site", "/admin/r/1/1/", expect(302, signed_in=302, staff=404)),
        Check("admin:app_list", "/admin/reservations/", ADMIN),
        Check("admin:-", "/admin/no-such-page/", expect(302, signed_in=302, staff=404)),
        Check("admin:reservations_auditentry_export", "/admin/reservations/auditentry/export.csv", ADMIN),
        Check("admin:auth_user_password_change", lambda d: f"/admin/auth/user/{d.bob.pk}/password/", ADMIN),
    ]
    for model, model_admin in admin.site._registry.items():
        label = model._meta.label_lower
        base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        name = f"admin:{model._meta.app_label}_{model._meta.model_name}"
        checks += [
            Check(f"{name}_changelist", base, ADMIN),
            Check(f"{name}_add", base + "add/", expect(302, signed_in=302, staff=403 if label in NO_ADD else 200)),
            Check(f"{name}_change", lambda d, model=model, base=base: f"{base}{first_of(model)}/change/", ADMIN),
            Check(f"{name}_history", lambda d, model=model, base=base: f"{base}{first_of(model)}/history/", ADMIN),
            Check(f"{name}_delete", lambda d, model=model, base=base: f"{base}{first_of(model)}/delete/",
                  expect(302, signed_in=302, staff=403 if label in NO_DELETE else 200)),
            # An object's old URL (without /change/) redirects to its page.
            Check("admin:-", lambda d, model=model, base=base: f"{base}{first_of(model)}/", expect(302, signed_in=302)),
        ]
    return checks


CHECKS = page_checks() + api_checks() + admin_checks()


def url_patterns(patterns=None, prefix="", namespace=None):
    """(pattern, name) of every URL the project serves; admin URLs by name, the rest by pattern."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            yield from url_patterns(entry.url_patterns, prefix + str(entry.pattern), entry.namespace or namespace)
        elif namespace == "admin":
            yield prefix + str(entry.pattern), f"admin:{entry.name or '-'}"
        else:
            yield prefix + str(entry.pattern), prefix + str(entry.pattern)


def test_every_url_pattern_is_checked():
    checked = {check.pattern for check in CHECKS}
    missing = sorted(key for _, key in url_patterns() if key not in checked)
    assert not missing, f"URLs without a check in tests/test_every_url.py: {missing}"


@pytest.fixture
def demo(tmp_path, settings):
    settings.TRAINING_DATA_ROOTS = [(tmp_path / "data").resolve()]
    settings.TRAINING_RUNS_DIR = (tmp_path / "runs").resolve()
    return Demo(tmp_path / "data")


def first_of(model):
    """The id the admin's URLs use for the model's first object (a token's is its user's)."""
    key = "user_id" if model is TokenProxy else "pk"
    return model._default_manager.order_by("pk").values_list(key, flat=True).first()


@pytest.mark.parametrize("username", list(ROLE_OF), ids=[name or "nobody" for name in ROLE_OF])
def test_every_url_answers_each_demo_user_as_it_should_and_never_with_a_5xx(demo, username):
    role = ROLE_OF[username]
    user = demo.users.get(username)
    wrong = []
    for check in CHECKS:
        client = Client()
        headers = {}
        if user is not None:
            if check.api:
                headers["HTTP_AUTHORIZATION"] = f"Token {Token.objects.get_or_create(user=user)[0].key}"
            else:
                client.force_login(user)
        url = check.url(demo) if callable(check.url) else check.url
        data = check.data(demo) if callable(check.data) else check.data
        extra = dict(check.extra)
        content_type = extra.pop("content_type", "application/json" if check.api else None)
        kwargs = {"data": data} if data is not None else {}
        if content_type and check.method != "get":
            kwargs["content_type"] = content_type
        response = getattr(client, check.method)(url, **kwargs, **headers, **extra)
        expected = check.expected[role]
        location = response.get("Location", "")
        if response.status_code != expected or response.status_code >= 500:
            wrong.append(f"{check.method.upper()} {url}: {response.status_code}, expected {expected}")
        elif role == ANONYMOUS and check.location and not location.startswith(check.location):
            wrong.append(f"{check.method.upper()} {url}: to {location}, expected {check.location}...")
    assert not wrong, f"as {username or 'nobody'} ({role}):\n" + "\n".join(wrong)
