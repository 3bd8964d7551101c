"""My bookings, a booking's page (with its training job), notices.

Views parse, call a service or selector, and render. Every change is a POST form; a refusal
(BookingError, BookingConflict, PermissionDenied) is shown in place on the page the form came from,
with the status code the API would give, never a 500.
"""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.template.defaultfilters import pluralize
from django.utils.dateparse import parse_datetime
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from reservations import policy, selectors, services
from reservations.errors import BookingConflict, BookingError, QuotaExceeded
from reservations.models import Notice, Reservation
from trainer import progress
from trainer.logs import job_log_text
from trainer.models import TrainingJob

from .. import selectors as web_selectors
from ..bookings_forms import CancelForm, MoveForm, NoticesReadForm, TransferForm

PAST_PER_PAGE = 20
NOTICES_PER_PAGE = 25
# The log tail a booking's page shows and refreshes.
LOG_TAIL_BYTES = 8 * 1024


# --- Actions' forms and their refusals ---------------------------------------------------------


class Failure:
    """One refused action, to show on the booking it was about: the bound form with its errors, and
    for a conflict the bookings in the way and where the booking could go instead."""

    def __init__(self, *, reservation_id, action, form, status, conflict=None):
        self.reservation_id = reservation_id
        self.action = action
        self.form = form
        self.status = status
        self.conflict = conflict
        self.moves, self.elsewhere = [], []


def _auto_id(action, reservation_id):
    # Several bookings' forms share one page: every id names its booking and action.
    return f"{action}-{reservation_id}-%s"


def _attach_actions(request, reservation, *, now, next_page, off_unhealthy, page=None, failure=None):
    """Give `reservation` what its actions need (`reservation.actions`), or None when the viewer may
    not change it or it can no longer change. `off_unhealthy`: _off_unhealthy() of the page's bookings."""
    if reservation.status not in Reservation.OPEN_STATUSES or not policy.can_manage(request.user, reservation):
        reservation.actions = None
        return
    initial = {"next": next_page, "page": page}
    start = timezone.localtime(reservation.start)
    forms = {
        "cancel": CancelForm(initial=initial, auto_id=_auto_id("cancel", reservation.pk)),
        "transfer": TransferForm(initial=initial, auto_id=_auto_id("transfer", reservation.pk)),
        "move": MoveForm(
            initial={**initial, "start": start.replace(tzinfo=None), "slots": reservation.slots},
            auto_id=_auto_id("move", reservation.pk),
        ),
    }
    mine = failure is not None and failure.reservation_id == reservation.pk
    if mine:
        forms[failure.action] = failure.form
    earliest = policy.ceil_to_slot(now)
    # The browser steps a datetime-local field from its min: from a boundary, it offers boundaries.
    forms["move"].fields["start"].widget.attrs["min"] = timezone.localtime(earliest).strftime("%Y-%m-%dT%H:%M")
    reservation.actions = {
        **forms,
        # The move form only where the rule allows it (the service says why otherwise).
        "may_move": policy.may_move(reservation, now),
        "failure": failure if mine else None,
        "earliest": earliest,
        "off_unhealthy": off_unhealthy.get(reservation.pk),
    }


def _off_unhealthy(reservations, now):
    """For those of `reservations` on a GPU the health check took out: the window their notice
    suggested, to move to in one click, by id (none where it may not move or nothing is free). Read
    for all of them at once: a failed GPU may hold many of a person's bookings."""
    stuck = [r for r in reservations if policy.may_move(r, now) and not all(a.gpu.healthy for a in r.allocation_list)]
    return {
        pk: {**suggestion, "gpus": ",".join(map(str, suggestion["gpus"]))}
        for pk, suggestion in selectors.healthy_move_suggestions(stuck, now).items()
        if suggestion is not None
    }


def _refusal_status(exc):
    return {BookingConflict: 409, PermissionDenied: 403}.get(type(exc), 400)


def _act(request, pk, action, form_class, perform, done):
    """Run one action from its POSTed form: on success back to the page it came from with a message;
    on a refusal, that page again with the refusal shown on the booking."""
    if not Reservation.objects.filter(pk=pk).exists():
        raise Http404("No such booking.")
    form = form_class(request.POST, auto_id=_auto_id(action, pk))
    failure = None
    if form.is_valid():
        try:
            perform(form.cleaned_data)
        except Reservation.DoesNotExist:
            raise Http404("No such booking.") from None
        except BookingError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        except PermissionDenied as exc:
            form.add_error(None, str(exc) or "You may not change this booking.")
            failure = Failure(reservation_id=pk, action=action, form=form, status=403)
        except BookingConflict as exc:
            form.add_error(None, exc.message)
            failure = Failure(reservation_id=pk, action=action, form=form, status=409, conflict=exc)
        except QuotaExceeded as exc:
            form.add_error(None, exc.message)
            failure = Failure(reservation_id=pk, action=action, form=form, status=409)
        else:
            messages.success(request, done)
            return redirect(_back(form.cleaned_data, pk))
    failure = failure or Failure(reservation_id=pk, action=action, form=form, status=400)
    next_page = form.cleaned_data.get("next") if hasattr(form, "cleaned_data") else None
    if next_page == "list":
        return _my_bookings(request, page=form.cleaned_data.get("page"), failure=failure)
    return _booking_page(request, pk, failure=failure)


def _back(data, pk):
    if data.get("next") == "list":
        url = reverse("web:my-bookings")
        return f"{url}?page={data['page']}" if data.get("page") else url
    return reverse("web:booking", args=[pk])


@login_required
@require_POST
def booking_cancel(request, pk):
    return _act(
        request, pk, "cancel", CancelForm,
        lambda data: services.reservation_cancel(reservation_id=pk, actor=request.user, reason=data["reason"]),
        f"Booking #{pk} is cancelled.",
    )


@login_required
@require_POST
def booking_transfer(request, pk):
    return _act(
        request, pk, "transfer", TransferForm,
        lambda data: services.reservation_transfer(
            reservation_id=pk, actor=request.user, to=data["to"].strip(), reason=data["reason"]
        ),
        f"Booking #{pk} is transferred to {request.POST.get('to', '').strip()}.",
    )


@login_required
@require_POST
def booking_move(request, pk):
    def move(data):
        services.reservation_move(
            reservation_id=pk, actor=request.user, start=data["start"], slots=data["slots"], gpu_ids=data["gpus"],
            reason=data["reason"],
        )

    return _act(request, pk, "move", MoveForm, move, f"Booking #{pk} is moved.")


def _explain_conflict(failure, reservation):
    """Split a move's suggestions into those on the booking's own GPUs (offered as one-click moves)
    and those on other GPUs (listed; reservation_move can take other GPUs too, which only the
    move off an unhealthy GPU offers in one click so far)."""
    if failure is None or failure.conflict is None:
        return
    held = {a.gpu_id for a in reservation.allocation_list}
    names = selectors.gpu_names({g for w in failure.conflict.suggestions for g in w.gpus})
    for window in failure.conflict.suggestions:
        item = {"start": window.start, "end": window.end, "gpus": [names.get(g, f"GPU {g}") for g in window.gpus]}
        (failure.moves if set(window.gpus) == held else failure.elsewhere).append(item)


# --- My bookings -------------------------------------------------------------------------------


@login_required
@require_GET
def my_bookings(request):
    return _my_bookings(request, page=request.GET.get("page"))


def _my_bookings(request, *, page, failure=None):
    now = timezone.now()
    upcoming = list(selectors.reservations_upcoming(request.user, now=now))
    positions = selectors.waitlist_positions(upcoming)
    past = Paginator(selectors.reservations_past(request.user, now=now), PAST_PER_PAGE).get_page(page)
    off_unhealthy = _off_unhealthy(upcoming, now)
    for reservation in upcoming:
        reservation.waitlist_ahead = positions.get(reservation.pk)
        _attach_actions(
            request, reservation, now=now, next_page="list", off_unhealthy=off_unhealthy, page=past.number, failure=failure
        )
        if failure is not None and failure.reservation_id == reservation.pk:
            _explain_conflict(failure, reservation)
    context = {
        "upcoming": upcoming,
        "past": past,
        "failure": failure,
        # Refused for a booking not listed here (not yours, or closed meanwhile): shown on top.
        "failure_apart": failure is not None and failure.reservation_id not in {r.pk for r in upcoming},
    }
    return render(request, "web/bookings/list.html", context, status=failure.status if failure else 200)


# --- A booking's page --------------------------------------------------------------------------


@login_required
@require_GET
def booking(request, pk):
    return _booking_page(request, pk)


def _booking_page(request, pk, *, failure=None):
    reservation = selectors.reservation_page(pk)
    if reservation is None:
        raise Http404("No such booking.")
    now = timezone.now()
    _attach_actions(
        request, reservation, now=now, next_page="booking", off_unhealthy=_off_unhealthy([reservation], now), failure=failure
    )
    _explain_conflict(failure, reservation)
    sees_job = policy.JobViewer(request.user).may_see(reservation)
    job = progress.booking_job(reservation) if sees_job else None
    context = {
        "reservation": reservation,
        "nodes": sorted({a.gpu.node.hostname for a in reservation.allocation_list}),
        "waitlist_ahead": selectors.waitlist_position(reservation),
        "history": selectors.audit_history(reservation, with_details=sees_job),
        "history_reasons": sees_job,
        "job": job,
        "serving": web_selectors.booking_serving(reservation) if sees_job else None,
        "failure": failure,
        "failure_apart": failure is not None and reservation.actions is None,
        # An occurrence of a recurring booking: its series' rule in words, and a link to its page.
        "series_words": web_selectors.rule_words(
            reservation.series.rule, reservation.series.first_start, reservation.series.time_zone
        ) if reservation.series_id else None,
    }
    if job is not None:
        context["job_state"] = _job_state(job, reservation)
    return render(request, "web/bookings/detail.html", context, status=failure.status if failure else 200)


def _visible_job(request, reservation):
    """The booking's job if the viewer may see it (its team, its owner, staff); otherwise None, as
    if it had none."""
    if not policy.JobViewer(request.user).may_see(reservation):
        return None
    return progress.booking_job(reservation)


def _job_state(job, reservation):
    return {
        "id": job.pk,
        "status": job.status,
        "status_display": job.get_status_display(),
        "reason": job.reason,
        "epoch": job.epoch,
        "epochs": job.epochs,
        "live": job.status in TrainingJob.LIVE,
        "finished": job.status in TrainingJob.FINISHED,
        # The checkpoint to download (a file inside TRAINING_RUNS_DIR) and its epoch, and whether a
        # new booking may resume from it: these change while the job runs, as the epoch does.
        "checkpoint": progress.checkpoint_file(job) is not None,
        "checkpoint_epoch": job.checkpoint_epoch,
        "resumable": bool(job.checkpoint),
        "series": progress.job_history(job),
        "log": job_log_text(job, LOG_TAIL_BYTES),
    }


def _job_or_404(request, pk):
    """The booking's job, for a viewer who may see it; a 404 for anyone else, as for a booking
    without one (whether another team's booking has a job is not to be found out)."""
    reservation = selectors.reservation_page(pk)
    if reservation is None:
        raise Http404("No such booking.")
    job = _visible_job(request, reservation)
    if job is None:
        raise Http404("No training job to show.")
    return reservation, job


@login_required
@require_GET
def booking_job(request, pk):
    """The job's status, epochs, per-epoch losses and mAP, and log tail: what the page refreshes."""
    reservation, job = _job_or_404(request, pk)
    return JsonResponse(_job_state(job, reservation), headers={"Cache-Control": "no-store"})


@login_required
@require_GET
def booking_checkpoint(request, pk):
    """The job's latest checkpoint, as a download; only a file inside TRAINING_RUNS_DIR."""
    _reservation, job = _job_or_404(request, pk)
    path = progress.checkpoint_file(job)
    if path is None:
        raise Http404("No checkpoint to download.")
    try:
        handle = open(path, "rb")
    except OSError:  # rotated away between the check and the open
        raise Http404("No checkpoint to download.") from None
    return FileResponse(handle, as_attachment=True, filename=f"job-{job.pk}-{path.name}")


# --- Notices -----------------------------------------------------------------------------------


@login_required
@require_GET
def notices(request):
    """The person's notices, newest first. Looking changes nothing (a link from anywhere could make
    this request): they stay unread until marked read, by the form here or on the banner."""
    page = Paginator(selectors.notices_of(request.user), NOTICES_PER_PAGE).get_page(request.GET.get("page"))
    shown = list(page.object_list)
    for notice in shown:
        notice.unread = notice.read_at is None
        notice.reclaim_at = _reclaim_time(notice)
    context = {"page": page, "notices": shown, "unread_shown": [n.pk for n in shown if n.unread]}
    return render(request, "web/notices.html", context)


@login_required
@require_POST
def notices_read(request):
    """Mark the notices posted (those a page showed) read, then back to that page."""
    form = NoticesReadForm(request.POST)
    if not form.is_valid():
        return HttpResponseBadRequest(" ".join(f"{field}: {' '.join(errors)}" for field, errors in form.errors.items()))
    marked = services.notices_mark_read(user=request.user, ids=form.cleaned_data["ids"])
    if marked:
        messages.success(request, f"{marked} notice{pluralize(marked)} marked read.")
    back = form.cleaned_data["next"]
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        back = reverse("web:notices")
    return redirect(back)


def _reclaim_time(notice):
    """A preemption warning's reclaim time (notice.data, stored as ISO 8601), or None."""
    if notice.kind != Notice.Kind.PREEMPTION_WARNING or not isinstance(notice.data, dict):
        return None
    value = notice.data.get("reclaim_at")
    try:
        return parse_datetime(value) if isinstance(value, str) else None
    except ValueError:
        return None
