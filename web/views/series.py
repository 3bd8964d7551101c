"""Recurring bookings in the browser: the booking form's "Repeat" (its occurrences' preview, and the
series it books), and a series' page with its actions (cancel one, the following or all; change the
title or priority of the occurrences to come; transfer it in its team).

Views parse, call reservations.services.series or a selector, and render. A refusal (BookingError,
SeriesConflict, PermissionDenied) is shown in place with the status the API would give, never a 500.
"""

from dataclasses import dataclass
from datetime import timezone as dt_timezone

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils import dateformat, timezone
from django.views.decorators.http import require_GET, require_POST

from reservations import policy, recurrence, selectors
from reservations.errors import BookingConflict, BookingError, QuotaExceeded, SeriesConflict
from reservations.models import Reservation, Series
from reservations.services.series import series_cancel, series_change, series_create, series_transfer

from .. import selectors as web_selectors
from ..bookings_forms import SeriesCancelForm, SeriesChangeForm, SeriesTransferForm
from ..forms import SeriesJobForm, SeriesPreviewForm

# Occurrences beyond the booking horizon cost the preview nothing to read, but a daily series of a
# year lists hundreds: the preview shows this many of them and counts the rest.
PREVIEW_LATER_SHOWN = 8
# A service's field, as the booking form names it.
FORM_FIELDS = {"start": "slot", "gpu_ids": "gpus", "gpu_count": "gpus", "recurrence": "repeat", "timezone": None}
STATE_WORDS = {
    "free": "free", "preempts": "preempts", "taken": "taken", "over_quota": "over quota",
    "borrowed": "borrowed time", "later": "later",
}


def _form_field(form, name):
    if name in form.fields:
        return name
    return FORM_FIELDS.get(name)


def _local(moment):
    return dateformat.format(timezone.localtime(moment), "D j M H:i")


# --- The booking form's preview --------------------------------------------------------------------


@login_required
@require_GET
def series_preview(request):
    """The occurrences the booking form's repeat would book, each as it stands now (free, taken,
    over the quota, preempting, or later: beyond the booking horizon), before it is sent (htmx asks
    as the form changes). Read without locks (selectors.occurrences_preview); the booking decides
    under them. Not repeating: nothing to say, and nothing read. A form not filled in far enough:
    nothing yet (200); a value that is no value: a 400 naming the field."""
    if (request.GET.get("repeat") or "none") == "none":
        return render(request, "web/calendar/_series_preview.html", {"off": True})
    form = SeriesPreviewForm(request.GET, user=request.user)
    if not form.is_complete():
        return render(request, "web/calendar/_series_preview.html", {"incomplete": True})
    if not form.is_valid():
        return render(request, "web/calendar/_series_preview.html", {"form": form}, status=400)
    data = form.cleaned_data
    now = timezone.now()
    try:
        team = policy.resolve_team(request.user, data["team"].slug if data.get("team") else None)
    except BookingError as error:
        # No team, or several to choose from: the form says so (#no-team) or asks (its team field).
        return render(request, "web/calendar/_series_preview.html", {"no_team": error.message})
    try:
        recurrence.first_start_check(data["start"], data["slots"], now)
        policy.require_occurrences_apart(data["starts"], data["slots"])
    except BookingError as error:
        form.add_error(_form_field(form, error.field), error.message)
        return render(request, "web/calendar/_series_preview.html", {"form": form}, status=400)
    previews = selectors.occurrences_preview(
        team=team, priority=data["priority"] or Reservation.Priority.NORMAL, starts=data["starts"],
        slots=data["slots"], now=now, gpu_ids=sorted(g.pk for g in data["gpus"]), borrow=data["borrow"],
    )
    within = [p for p in previews if p.state != "later"]
    later = [p for p in previews if p.state == "later"]
    counts = {}
    for preview in previews:
        counts[preview.state] = counts.get(preview.state, 0) + 1
    return render(request, "web/calendar/_series_preview.html", {
        "words": rule_words(data["rule"], data["start"], data["tz"]),
        "total": len(previews),
        "shown": [(p, STATE_WORDS[p.state]) for p in within + later[:PREVIEW_LATER_SHOWN]],
        "more_later": len(later) - len(later[:PREVIEW_LATER_SHOWN]),
        "has_later": bool(later),
        "counts": [(state, STATE_WORDS[state], counts[state]) for state in STATE_WORDS if state in counts],
        "blocked": sum(not p.bookable for p in previews),
        "on_conflict": data["on_conflict"],
    })


def rule_words(rule, first_start, time_zone):
    return web_selectors.rule_words(rule, first_start, time_zone)


# --- The booking form books a series ---------------------------------------------------------------


def book_series(request, form):
    """The booking form with a repeat: the series booked (a context with `series_result`), or why
    not, in place: field errors, the occurrences in the way (SeriesConflict, with one-click "skip
    them" and "wait for them"), or the bookings its occurrences would preempt, to confirm first."""
    data = form.cleaned_data
    now = timezone.now()
    gpu_ids = sorted(g.pk for g in data["gpus"])
    team = data["team"].slug if data.get("team") else None
    # The fields the answer's buttons post again besides the form's own (carried) ones.
    again = [("gpus", pk) for pk in gpu_ids] + [
        ("date", data["date"].isoformat()), ("slot", data["slot"].strftime("%H:%M")),
    ]
    try:
        preview = _series_preemption_preview(request.user, form, team, gpu_ids, now, again)
        if preview is not None:
            return preview
        result = series_create(
            user=request.user, start=data["start"], slots=data["slots"], rule=data["rule"], tz=data["tz"],
            on_conflict=data["on_conflict"], gpu_ids=gpu_ids, priority=data["priority"],
            preemptible=data["preemptible"], team=team, title=data["title"],
            work={"job": data.get("job"), "serve": data.get("serve")}, auto_rebook=data["auto_rebook"],
            borrow=data["borrow"], now=now,
        )
    except SeriesConflict as conflict:
        names = selectors.gpu_names({g for windows in conflict.suggestions.values() for w in windows for g in w.gpus})
        blocked = [
            {
                "preview": p, "words": STATE_WORDS[p.state],
                "instead": [
                    {"gpus": [names.get(g, f"GPU {g}") for g in w.gpus], "start": w.start, "end": w.end}
                    for w in conflict.suggestions.get(p.start, [])
                ],
            }
            for p in conflict.occurrences
        ]
        return {
            "series_conflict": conflict, "blocked": blocked, "series_fields": again, "status": 409,
            "may_wait": any(p.state == "taken" for p in conflict.occurrences),
        }
    except (BookingConflict, QuotaExceeded) as refused:
        # `fail`, and an occurrence was taken between the check and its booking: nothing was kept.
        form.add_error(None, refused.message)
        return {"status": 409}
    except BookingError as error:
        form.add_error(_form_field(form, error.field), error.message)
        return {"status": 400}
    except PermissionDenied as denied:
        form.add_error("priority" if data["priority"] == "high" else None, str(denied) or "You may not do that.")
        return {"status": 403}
    return {"series_result": result, "status": 201}


def _series_preemption_preview(user, form, team, gpu_ids, now, again):
    """The occurrences within the horizon that would preempt bookings, to show before the series is
    confirmed; None when none would, or when the person confirmed exactly the bookings shown.
    Raises BookingError for a series the rules refuse anyway (the booking then says why)."""
    data = form.cleaned_data
    recurrence.first_start_check(data["start"], data["slots"], now)
    team = policy.resolve_team(user, team)
    preempting = selectors.occurrences_preempting(
        team=team, priority=data["priority"], starts=data["starts"], slots=data["slots"], now=now, gpu_ids=gpu_ids,
        borrow=data["borrow"],
    )
    shown = {a.reservation_id for p in preempting for a in p.conflicts}
    if not preempting or (data["confirm_preempt"] and shown == data["victims"]):
        return None
    fields = again + [("victims", ",".join(str(pk) for pk in sorted(shown)))]
    return {
        "series_preempt": preempting, "changed": data["confirm_preempt"] and shown != data["victims"],
        "confirm_fields": fields, "status": 200,
    }


def series_booked(request, result, in_place):
    """After a series is booked: its page, with a message saying what was booked, skipped and
    waitlisted (htmx is told to go there; without JavaScript a redirect)."""
    series = result.series
    parts = []
    for outcome, words in (("booked", "booked"), ("waitlisted", "on the waitlist"), ("skipped", "skipped")):
        count = len(result.of(outcome))
        if count:
            parts.append(f"{count} {words}")
    later = len(result.of("later"))
    text = f"Series #{series.pk} booked, {rule_words(series.rule, series.first_start, series.time_zone)}: "
    text += ", ".join(parts) or "nothing booked yet"
    if later:
        text += f"; {later} later occurrence{pluralize(later)} will be booked as the booking horizon reaches them"
    skipped = result.of("skipped")
    if skipped:
        text += ". Skipped: " + "; ".join(f"{_local(o.start)} ({o.reason})" for o in skipped[:3])
        if len(skipped) > 3:
            text += f"; and {len(skipped) - 3} more"
    messages.success(request, text + ".")
    url = reverse("web:series", args=[series.pk])
    if not in_place:
        return redirect(url)
    response = HttpResponse(status=201)
    response["HX-Redirect"] = url
    return response


# --- A series' page ----------------------------------------------------------------------------------


@dataclass
class Failure:
    """One refused action on the page: its form with the errors, the occurrence it was about."""

    action: str
    form: object
    status: int
    occurrence: str = ""


def _key(occurrence):
    """An occurrence in ids: its UTC start ("20300107T1800"), whatever zone the page shows."""
    return f"{occurrence.astimezone(dt_timezone.utc):%Y%m%dT%H%M}"


def _cancel_id(occurrence):
    return f"cancel-{_key(occurrence)}-%s"


@login_required
@require_GET
def series_page(request, pk):
    return _series_page(request, pk)


def _series_page(request, pk, *, failure=None):
    series = web_selectors.series_for_page(pk)
    if series is None:
        raise Http404("No such series.")
    now = timezone.now()
    viewer = policy.JobViewer(request.user)
    sees_work = viewer.may_see_booking_of(series.user_id, series.team_id)
    rows = web_selectors.series_rows(series, now=now, viewer=viewer)
    manage = series.cancelled_at is None and policy.can_manage(request.user, series)
    for row in rows:
        row.label, row.key = STATE_LABELS[row.state], _key(row.occurrence)
        row.form, row.failed = None, False
        if manage and row.may_cancel:
            key = row.occurrence.isoformat()
            mine = failure is not None and failure.action == "cancel" and failure.occurrence == key
            row.form = failure.form if mine else SeriesCancelForm(
                initial={"occurrence": key}, auto_id=_cancel_id(row.occurrence)
            )
            row.failed = mine
    # A refusal the page has no form to show it at (the viewer may not change the series, or the
    # occurrence is no longer offered): said on top.
    failure_apart = failure is not None and (
        not manage or (failure.action == "cancel" and not any(row.failed for row in rows))
    )
    context = {
        "series": series,
        "words": rule_words(series.rule, series.first_start, series.time_zone),
        "gpus": _series_gpus(series),
        "coming": [r for r in rows if r.end > now],
        "past": [r for r in rows if r.end <= now],
        "counts": _counts(rows),
        "sees_work": sees_work,
        "work": series.work if sees_work else None,
        "manage": manage,
        "others": request.user.pk != series.user_id,
        "history": web_selectors.series_history(series, with_details=sees_work),
        "history_reasons": sees_work,
        "failure": failure,
        "failure_apart": failure_apart,
        "length": recurrence.span(series.slots),
        "ended": series.cancelled_at is None and all(r.end <= now for r in rows),
    }
    if manage:
        context["actions"] = _action_forms(request.user, series, failure)
        context["members"] = [name for name in web_selectors.team_usernames(series.team_id) if name != series.user.get_username()]
    return render(request, "web/series/detail.html", context, status=failure.status if failure else 200)


def _series_gpus(series):
    if series.gpu_ids is None:
        return None
    names = selectors.gpu_names(series.gpu_ids)
    return [names.get(pk, f"GPU {pk}") for pk in series.gpu_ids]


# What each occurrence's state is called on the page (its booking's status, or what became of one
# without a booking: web.selectors.OccurrenceRow), in the order the page counts them.
STATE_LABELS = {
    "confirmed": "booked", "active": "running", "completed": "completed", "waitlisted": "on the waitlist",
    "preempted": "preempted", "skipped": "skipped", "cancelled": "cancelled", "missed": "not booked",
    "due": "not booked yet", "later": "later",
}


def _counts(rows):
    counts = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    return [(STATE_LABELS[state], counts[state]) for state in STATE_LABELS if state in counts]


def _action_forms(user, series, failure):
    forms = {
        "change": SeriesChangeForm(
            user=user, current=series.priority, initial={"title": series.title, "priority": series.priority},
            auto_id="change-%s",
        ),
        "transfer": SeriesTransferForm(auto_id="transfer-%s"),
        "job": SeriesJobForm(initial=SeriesJobForm.initial_of((series.work or {}).get("job")), auto_id="job-%s"),
        "cancel_all": SeriesCancelForm(initial={"scope": "all"}, auto_id="cancel-all-%s"),
    }
    if failure is not None and failure.action in forms:
        forms[failure.action] = failure.form
    return forms


def _act(request, pk, action, form, perform, done):
    """Run one action from its POSTed form: on success back to the series' page with a message; on a
    refusal, the page again with the refusal shown at the form."""
    if not Series.objects.filter(pk=pk).exists():
        raise Http404("No such series.")
    status = 400
    if form.is_valid():
        try:
            perform(form.cleaned_data)
        except Series.DoesNotExist:
            raise Http404("No such series.") from None
        except BookingError as error:
            form.add_error(error.field if error.field in form.fields else None, error.message)
        except PermissionDenied as denied:
            form.add_error(None, str(denied) or "You may not change this series.")
            status = 403
        else:
            messages.success(request, done(form.cleaned_data))
            return redirect("web:series", pk=pk)
    occurrence = form.data.get("occurrence", "") if action == "cancel" else ""
    if action == "cancel" and form.data.get("scope") == "all":
        action = "cancel_all"
    return _series_page(request, pk, failure=Failure(action=action, form=form, status=status, occurrence=occurrence))


@login_required
@require_POST
def series_cancel_view(request, pk):
    occurrence = request.POST.get("occurrence", "")
    form = SeriesCancelForm(request.POST, auto_id="cancel-all-%s")
    if request.POST.get("scope") != "all":
        moment = SeriesCancelForm.moment(occurrence)
        if moment is not None:
            form = SeriesCancelForm(request.POST, auto_id=_cancel_id(moment))

    def done(data):
        if data["scope"] == "all":
            return f"Series #{pk} is cancelled, with its occurrences to come."
        when = _local(data["occurrence"])
        if data["scope"] == "one":
            return f"The occurrence of {when} is cancelled."
        return f"The occurrences from {when} on are cancelled."

    return _act(
        request, pk, "cancel", form,
        lambda data: series_cancel(
            series_id=pk, actor=request.user, scope=data["scope"], occurrence=data["occurrence"], reason=data["reason"]
        ),
        done,
    )


@login_required
@require_POST
def series_change_view(request, pk):
    series = Series.objects.filter(pk=pk).first()
    form = SeriesChangeForm(request.POST, user=request.user, current=series and series.priority, auto_id="change-%s")

    def change(data):
        changes = {name: data[name] for name in ("title", "priority") if series is not None and data[name] != getattr(series, name)}
        if not changes:
            raise BookingError("title", "Nothing to change: give a new title or priority.")
        series_change(series_id=pk, actor=request.user, reason=data["reason"], **changes)

    return _act(request, pk, "change", form, change, lambda data: f"Series #{pk} is changed, with its occurrences to come.")


@login_required
@require_POST
def series_job_view(request, pk):
    form = SeriesJobForm(request.POST, auto_id="job-%s")

    def change(data):
        series_change(series_id=pk, actor=request.user, reason=data["reason"], work={"job": data["job"]})

    def done(data):
        if data["job"] is None:
            return f"Series #{pk}: its occurrences to come carry no training job."
        return f"Series #{pk}: its occurrences to come train with the new job."

    return _act(request, pk, "job", form, change, done)


@login_required
@require_POST
def series_transfer_view(request, pk):
    form = SeriesTransferForm(request.POST, auto_id="transfer-%s")
    return _act(
        request, pk, "transfer", form,
        lambda data: series_transfer(series_id=pk, actor=request.user, to=data["to"].strip(), reason=data["reason"]),
        lambda data: f"Series #{pk} is transferred to {data['to'].strip()}, with its occurrences to come.",
    )
