"""The calendar, its event feed, the booking form and its quota preview. The pages parse and render;
the booking goes through reservations.services.reservation_create, as the REST API's does (same
rules, same audit); a booking that repeats, through web.views.series (a series)."""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_POST

from reservations import policy, selectors, services
from reservations.errors import BookingConflict, BookingError, QuotaExceeded
from reservations.models import Team
from trainer.selectors import job_progress, resumable_jobs, training_datasets
from trainer.spec import suggested_size

from ..forms import RESUME_EMPTY_LABEL, BookingForm, QuotaPreviewForm, RecentChoiceField, resume_label
from ..middleware import viewer_zone
from ..selectors import nodes_with_gpus, rule_words
from ..templatetags.quotas import borrowed_terms
from . import series

# The widest window the feed serves in one request (the calendar asks for a day or a week).
FEED_MAX_DAYS = 42
FEED_MAX_YEARS = 10


@login_required
@require_GET
def calendar_page(request):
    gpus = selectors.calendar_gpus()
    now = timezone.now()
    initial = {"date": timezone.localdate(), "slot": timezone.localtime(policy.ceil_to_slot(now)).time(), "slots": 1}
    resume = request.GET.get("resume", "")
    if _is_id(resume):
        initial.update(train=True, resume_from=int(resume))
    datasets = training_datasets()
    # The first dataset offered (the demo one, where there is one) is the one a job trains on unless
    # the person names another.
    initial["data"] = datasets[0] if datasets else ""
    form = BookingForm(user=request.user, initial=initial)
    context = _form_context(form, gpus, datasets=datasets)
    teams = list(Team.objects.order_by("name"))
    return render(request, "web/calendar.html", {
        **context,
        "teams": teams,
        "my_teams": form.fields["team"].queryset,
        "standings": _standings(request.user, now),
        # The form on this page previews its quota as it changes (htmx; not on the page without it).
        "live_form": True,
        "resources": _resources(context["nodes"]),
        "waitlisted": selectors.waitlisted(now=now),
        "config": {
            "events": reverse("web:events"),
            "bookingUrl": reverse("web:booking", args=[0]).removesuffix("0/"),
            "teams": {team.slug: team.name for team in teams},
            "slotMinutes": settings.SLOT_MINUTES,
            "horizonDays": settings.BOOKING_HORIZON_DAYS,
            "now": now.isoformat(),
            "me": request.user.get_username(),
            "borrowedTerms": borrowed_terms(),
        },
    })


def _standings(user, now):
    """Where each of the viewer's teams stands against its quota this week (a fixed number of queries)."""
    return selectors.team_standings(Team.objects.filter(memberships__user=user).order_by("name"), now)


def _form_context(form, gpus, datasets=()):
    """What the booking form's template needs besides the form: the GPUs grouped by node (those that
    can train now first), each GPU with the image size and batch a job on it starts from, and the
    datasets to offer (trainer.selectors.training_datasets)."""
    nodes = nodes_with_gpus(gpus)
    for group in nodes:
        for gpu in group.gpus:
            gpu.suggested = suggested_size(gpu.model)
    chosen = form["gpus"].value() or []
    return {
        "form": form,
        "nodes": nodes,
        "selected_gpus": {int(pk) for pk in chosen if _is_id(str(pk))},
        "slot_minutes": settings.SLOT_MINUTES,
        "datasets": datasets,
    }


def _is_id(text):
    # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
    return text.isascii() and text.isdigit() and len(text) < 19


def _resources(nodes):
    """Event Calendar's resources: one group per node (in the booking form's order), one track per
    GPU under it."""
    return [
        {
            "id": f"node-{group.node.pk}",
            "title": f"{group.node.hostname} ({'online' if group.node.online else 'offline'})",
            "extendedProps": {"node": group.node.pk, "online": group.node.online},
            "children": [_track(gpu) for gpu in group.gpus],
        }
        for group in nodes
    ]


def _track(gpu):
    label, model = f"gpu{gpu.index}", gpu.model.removeprefix("NVIDIA ")
    return {
        "id": str(gpu.pk),
        "title": f"{label} · {model}{'' if gpu.healthy else ' · unhealthy'}",
        # The title's parts, which calendar.js lays out by the screen's width.
        "extendedProps": {
            "gpu": gpu.pk, "name": gpu.name, "node": gpu.node_id, "healthy": gpu.healthy, "label": label, "model": model,
        },
    }


@login_required
@require_GET
def event_feed(request):
    """The visible window's bookings as Event Calendar events (`start` and `end` required)."""
    start, end, errors = _window(request)
    if errors:
        return JsonResponse({"errors": errors}, status=400)
    gpus = selectors.calendar_gpus()
    node = request.GET.get("node", "")
    if node:
        if not _is_id(node):
            return JsonResponse({"errors": {"node": ["Give a node id."]}}, status=400)
        gpus = [g for g in gpus if g.node_id == int(node)]
    bookings = selectors.calendar_bookings(start=start, end=end, gpu_ids=[g.pk for g in gpus])
    team = request.GET.get("team", "")
    if team:
        bookings = [b for b in bookings if b["team__slug"] == team]
    if request.GET.get("mine") in ("1", "true"):
        bookings = [b for b in bookings if b["user_id"] == request.user.pk]
    # Job progress only for the bookings whose jobs the viewer may see (policy.JobViewer).
    viewer = policy.JobViewer(request.user)
    progress = job_progress([b["id"] for b in bookings if viewer.may_see_booking_of(b["user_id"], b["team_id"])])
    # Each series' rule in words once, however many of its occurrences the window holds.
    words = {
        b["series_id"]: rule_words(b["series__rule"], b["series__first_start"], b["series__time_zone"])
        for b in bookings if b["series_id"] is not None
    }
    events = [_event(b, progress.get(b["id"]), request.user.pk, words.get(b["series_id"])) for b in bookings]
    # The past and the unhealthy GPUs cannot be booked: shaded, and the page refuses to select them.
    now = timezone.now()
    if start < now:
        events.append({
            "id": "past", "resourceIds": [str(g.pk) for g in gpus], "start": start.isoformat(),
            "end": min(now, end).isoformat(), "display": "background", "classNames": ["past"],
        })
    for gpu in gpus:
        if not gpu.healthy:
            events.append({
                "id": f"unhealthy-{gpu.pk}", "resourceIds": [str(gpu.pk)], "start": start.isoformat(),
                "end": end.isoformat(), "display": "background", "classNames": ["unhealthy"],
            })
    return JsonResponse(events, safe=False)


def _window(request):
    """The feed's window from Event Calendar's `start`/`end`: ISO times, with an offset or in the
    calendar's zone (`zone`: an IANA name or UTC)."""
    errors, moments = {}, {}
    zone = viewer_zone(request, request.GET.get("zone", "")) or timezone.get_current_timezone()
    for name in ("start", "end"):
        raw = request.GET.get(name, "")
        try:
            moment = parse_datetime(raw) if raw else None
        except ValueError:
            moment = None
        if moment is None:
            errors[name] = ["Give an ISO 8601 time, e.g. 2030-01-07T00:00:00Z."]
            continue
        moments[name] = moment if timezone.is_aware(moment) else timezone.make_aware(moment, zone)
    if errors:
        return None, None, errors
    start, end = moments["start"], moments["end"]
    # Far from now is no calendar anyone looks at (and year 1 minus the longest booking overflows).
    now = timezone.now()
    for name, moment in moments.items():
        if abs(moment - now) > timedelta(days=FEED_MAX_YEARS * 366):
            return None, None, {name: [f"Ask for a window within {FEED_MAX_YEARS} years of now."]}
    if end <= start:
        return None, None, {"end": ["The end must be after the start."]}
    if end - start > timedelta(days=FEED_MAX_DAYS):
        return None, None, {"end": [f"Ask for {FEED_MAX_DAYS} days at most."]}
    return start, end, None


def _event(booking, job, viewer_id, series_words=None):
    classes = [f"status-{booking['status']}"]
    if booking["preemptible"]:
        classes.append("preemptible")
    if booking["borrowed"]:
        classes.append("borrowed")
    if booking["user_id"] == viewer_id:
        classes.append("mine")
    if booking["series_id"]:
        classes.append("series")
    title = booking["title"] or "GPU booking"
    owner = booking["user__username"]
    return {
        "id": str(booking["id"]),
        "resourceIds": [str(gpu_id) for gpu_id in booking["gpus"]],
        "start": booking["start"].isoformat(),
        "end": booking["end"].isoformat(),
        "title": f"{title} · {owner}",
        "backgroundColor": booking["team__colour"],
        "classNames": classes,
        # What the details on hover and focus show (calendar.js); the booking's page is bookingUrl + id.
        "extendedProps": {
            "owner": owner,
            "team": booking["team__slug"],
            "title": title,
            "priority": booking["priority"],
            "preemptible": booking["preemptible"],
            "borrowed": booking["borrowed"],
            "status": booking["status"],
            "job": job,
            # An occurrence of a series: its id and its rule in words (calendar.js marks it "↻").
            "series": {"id": booking["series_id"], "rule": series_words} if booking["series_id"] else None,
        },
    }


@login_required
@require_POST
def book(request):
    """The booking form: book, or show in place why not (field errors, a 409 with its conflicts and
    suggestions, a 409 over the team's quota with the offer to book it as borrowed time, or the
    bookings a preemption would take, to confirm first)."""
    form = BookingForm(request.POST, user=request.user)
    gpus = selectors.calendar_gpus()
    in_place = request.headers.get("HX-Request")
    # An answer in place leaves the form as it is; without JavaScript the whole form comes again.
    context = _form_context(form, gpus, datasets=() if in_place else training_datasets())
    # The fields a suggestion or a confirmation posts again, unchanged.
    context["carry"] = [
        (name, value) for name, values in request.POST.lists() for value in values
        if name not in ("csrfmiddlewaretoken", "gpus", "date", "slot", "more", "confirm_preempt", "victims")
    ]
    if form.is_valid() and form.cleaned_data["rule"]:
        # "Repeat": a series (web.views.series); booked, its page says what became of each occurrence.
        context.update(series.book_series(request, form))
        if context.get("series_result"):
            return series.series_booked(request, context["series_result"], in_place)
    elif form.is_valid():
        context.update(_book(request, form, {g.pk: g for g in gpus}))
    template = "web/calendar/_result.html" if in_place else "web/calendar/result_page.html"
    if context.get("booked") and in_place:
        # The team's bar beside the calendar counts the new booking too (swapped out of band).
        context["standings"] = _standings(request.user, timezone.now())
    response = render(request, template, context, status=context.get("status", 200 if form.is_valid() else 400))
    if context.get("booked"):
        response["HX-Trigger"] = "booked"
    return response


def _book(request, form, gpus_by_id):
    data = form.cleaned_data
    now = timezone.now()
    try:
        start, end = form.window(now)
    except BookingError as error:
        form.add_error(error.field if error.field in form.fields else None, error.message)
        return {"status": 400}
    gpu_ids = sorted(g.pk for g in data["gpus"])
    if data.get("more"):
        extra = _more_gpus(form, start, end, gpu_ids, data["more"])
        if extra is None:
            return {"status": 400}
        gpu_ids = sorted(gpu_ids + extra)
    priority = data["priority"]
    # "now" only ever takes free GPUs, and time over the quota is refused or borrowed, which never
    # preempts: nothing to preview for those.
    if not data["start_now"] and _may_preempt_within_quota(request.user, form, start, end, len(gpu_ids)):
        try:
            preview = _preemption_preview(request.user, form, start, end, gpu_ids, now)
        except BookingError as error:
            form.add_error(error.field if error.field in form.fields else None, error.message)
            return {"status": 400}
        if preview is not None:
            return preview
    try:
        reservation = services.reservation_create(
            user=request.user,
            start=data["start"],
            slots=data["slots"],
            gpu_ids=gpu_ids,
            priority=priority,
            preemptible=data["preemptible"],
            team=data["team"].slug if data.get("team") else None,
            title=data["title"],
            waitlist=data["waitlist"],
            work={"job": data.get("job"), "serve": data.get("serve")},
            auto_rebook=data["auto_rebook"],
            borrow=data["borrow"],
            now=now,
        )
    except BookingConflict as conflict:
        suggestions = [
            {
                "gpus": [gpus_by_id[pk] for pk in window.gpus],
                "local_start": timezone.localtime(window.start),
                "local_end": timezone.localtime(window.end),
            }
            for window in conflict.suggestions
        ]
        return {"conflict": conflict, "suggestions": suggestions, "status": 409}
    except QuotaExceeded as refused:
        return _quota_refusal(request, refused.excess, start, end, gpu_ids)
    except BookingError as error:
        form.add_error(error.field if error.field in form.fields else None, error.message)
        return {"status": 400}
    except PermissionDenied as denied:
        form.add_error("priority" if priority == "high" else None, str(denied) or "You may not do that.")
        return {"status": 403}
    return {"booked": reservation, "warnings": getattr(reservation, "warnings", []), "status": 201}


def _quota_refusal(request, excess, start, end, gpu_ids):
    """A booking refused over its team's quota, shown with the offer to book it as borrowed time
    ("Book as borrowed" posts it again, "more" resolved to GPUs, with borrow) where borrowing would
    fit: the service names the first limit passed, which for an in-quota booking is never the
    borrow limit, so the preview's reading says whether borrowing is over its limit too."""
    team = Team.objects.get(slug=excess.team_slug)
    borrow_excess = None if excess.limit == "borrow_gpu_hours_per_week" else (
        selectors.quota_preview(team=team, start=start, end=end, gpus=len(gpu_ids)).borrow_excess
    )
    fields = [("gpus", pk) for pk in gpu_ids] + [(name, request.POST[name]) for name in ("date", "slot") if name in request.POST]
    return {
        "quota_refused": excess, "quota_team": team, "borrow_excess": borrow_excess,
        "may_borrow": excess.borrowable and borrow_excess is None, "borrow_fields": fields, "status": 409,
    }


def _may_preempt_within_quota(user, form, start, end, gpus):
    """Whether the booking would be charged within its team's quota (or be staff's booking over it,
    which may pass any limit), as a booking that may preempt. Time over the quota is refused or
    borrowed, and borrowed time never preempts: no preemption preview to show for it. A reading
    without a lock (selectors.quota_preview): the booking decides under it. True when the team is
    not known yet (the booking then says why)."""
    data = form.cleaned_data
    try:
        team = policy.resolve_team(user, data["team"].slug if data.get("team") else None)
    except BookingError:
        return True
    state = selectors.quota_preview(team=team, start=start, end=end, gpus=gpus).state
    if state in ("unlimited", "within"):
        return True
    return user.is_staff and not data["borrow"]


def _preemption_preview(user, form, start, end, gpu_ids, now):
    """The bookings this one would preempt, to show before it is confirmed; None when it takes none,
    or when the person confirmed exactly the bookings shown. Raises BookingError for a request the
    booking would refuse anyway (checked by the same rules first, so no preview is shown for it)."""
    data = form.cleaned_data
    policy.validate_window(start, data["slots"], now)
    policy.resolve_team(user, data["team"].slug if data.get("team") else None)
    victims = selectors.preemption_preview(priority=data["priority"], start=start, end=end, now=now, gpu_ids=gpu_ids)
    shown = {p.reservation.pk for p in victims}
    if not victims or (data["confirm_preempt"] and shown == data["victims"]):
        return None
    # The confirmation posts the same GPUs again ("more" resolved to GPUs) and the bookings shown:
    # if those changed meanwhile, the person sees the new ones before anything is taken.
    fields = [("gpus", pk) for pk in gpu_ids] + [
        ("date", data["date"].isoformat()),
        ("slot", data["slot"].strftime("%H:%M")),
        ("victims", ",".join(str(pk) for pk in sorted(shown))),
    ]
    changed = data["confirm_preempt"] and shown != data["victims"]
    return {"preview": victims, "changed": changed, "start": start, "end": end, "confirm_fields": fields, "status": 200}


def _more_gpus(form, start, end, gpu_ids, count):
    """"Also book N more GPUs on this node": the first N free ones there, or a form error."""
    node = form.cleaned_data["gpus"][0].node
    free = selectors.free_gpus_on_node(node_id=node.pk, start=start, end=end, exclude=gpu_ids)
    if len(free) < count:
        form.add_error("more", f"Only {len(free)} more GPUs of {node.hostname} are free then.")
        return None
    return [g.pk for g in free[:count]]


@login_required
@require_GET
def quota_preview(request):
    """How the booking form's selection stands against its team's quota before it is sent (htmx
    asks as the form changes): within it, over it (which limit, by how much), or over it and
    borrowable. Read without a lock (selectors.quota_preview); the booking decides under it. A form
    not filled in far enough has nothing to say yet (200); a value that is no value, a 400 naming
    the field."""
    form = QuotaPreviewForm(request.GET, user=request.user)
    if not form.is_complete():
        return render(request, "web/calendar/_quota_preview.html", {"incomplete": True})
    if not form.is_valid():
        return render(request, "web/calendar/_quota_preview.html", {"form": form}, status=400)
    data = form.cleaned_data
    try:
        team = policy.resolve_team(request.user, data["team"].slug if data.get("team") else None)
    except BookingError as error:
        # No team, or several to choose from: the form says so (#no-team) or asks (its team field).
        return render(request, "web/calendar/_quota_preview.html", {"no_team": error.message})
    start, end = form.window(timezone.now())
    preview = selectors.quota_preview(team=team, start=start, end=end, gpus=form.gpu_count)
    return render(request, "web/calendar/_quota_preview.html", {
        "preview": preview, "borrow": data["borrow"], "staff": request.user.is_staff,
    })


RESUME_SEARCH_MAX = 100


@login_required
@require_GET
def resume_options(request):
    """The booking form's "resume from" choices for a search (htmx swaps them into the list as the
    person types): the team's newest jobs with a checkpoint whose number or booking title matches,
    a page of them, and the one already chosen; an empty search gives the newest. A search longer
    than any title: a 400 naming it."""
    search = request.GET.get("q", "")
    if len(search) > RESUME_SEARCH_MAX:
        return JsonResponse({"q": [f"Search with at most {RESUME_SEARCH_MAX} characters."]}, status=400)
    jobs = list(resumable_jobs(request.user, search)[: RecentChoiceField.offered])
    # The job already chosen (the list's value, sent along) stays offered and chosen.
    chosen = request.GET.get("resume_from", "")
    chosen = int(chosen) if _is_id(chosen) else None
    if chosen is not None and chosen not in {job.pk for job in jobs}:
        jobs[:0] = resumable_jobs(request.user).filter(pk=chosen)
    return render(request, "web/calendar/_resume_options.html", {
        "options": [(job.pk, resume_label(job)) for job in jobs], "chosen": chosen,
        "empty_label": RESUME_EMPTY_LABEL, "search": search,
    })
