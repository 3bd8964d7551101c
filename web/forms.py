"""The calendar's booking form: what a person fills in, turned into the arguments of
reservations.services.reservation_create. The rules themselves stay in reservations.policy: the
form only parses and names the field that is wrong."""

from datetime import datetime, time, timedelta, timezone as dt_timezone

from django import forms
from django.forms.models import ModelChoiceIterator
from django.conf import settings
from django.utils import timezone
from rest_framework.exceptions import ValidationError as APIValidationError

from reservations import jobs, policy, recurrence
from reservations.errors import BookingError
from reservations.models import GPU, Reservation, Series, Team
from trainer.models import TrainingJob
from trainer.selectors import resumable_jobs
from trainer.spec import GPU_SIZE

from .selectors import servable_models

class GPUChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, gpu):
        health = "" if gpu.healthy else " (unhealthy)"
        return f"{gpu.name} · {gpu.model}{health}"


class _RecentChoices(ModelChoiceIterator):
    """The first `field.offered` rows of the field's queryset, and the chosen one if it is older."""

    def __iter__(self):
        if self.field.empty_label is not None:
            yield ("", self.field.empty_label)
        shown = set()
        for obj in self.queryset[: self.field.offered]:
            shown.add(obj.pk)
            yield self.choice(obj)
        chosen = str(self.field.chosen or "")
        if chosen.isascii() and chosen.isdigit() and len(chosen) < 19 and int(chosen) not in shown:
            obj = self.queryset.filter(pk=int(chosen)).first()
            if obj is not None:
                yield self.choice(obj)

    def __len__(self):
        return self.field.offered + 2


RESUME_EMPTY_LABEL = "— a new run —"


def resume_label(job):
    """How a job to resume from is offered (the booking form's list, its search)."""
    return f"job {job.pk}: {job.reservation.title or 'untitled'} (epoch {job.checkpoint_epoch or job.epoch} of {job.epochs})"


class RecentChoiceField(forms.ModelChoiceField):
    """A choice of rows from a list that grows for years (a team's jobs): any row of the queryset is
    accepted, only the `offered` first are listed (and the one chosen), so the page costs the same
    in its third year as in its first."""

    iterator = _RecentChoices
    offered = 50
    chosen = None


class BookingWindowForm(forms.Form):
    """What GPUs, when and for which team: the part of the booking form its quota preview reads too."""

    gpus = GPUChoiceField(
        queryset=GPU.objects.select_related("node").order_by("node__hostname", "index"),
        label="GPUs",
        help_text="Drag across a GPU's track, or pick one or more here.",
        error_messages={"required": "Pick at least one GPU.", "invalid_choice": "No such GPU: %(value)s."},
    )
    more = forms.IntegerField(
        label="Also book this many more GPUs on the same node",
        min_value=0,
        max_value=64,
        initial=0,
        required=False,
    )
    start_now = forms.BooleanField(
        label="Start now: the rest of the current slot counts as the first slot", required=False
    )
    date = forms.DateField(label="Date", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    slot = forms.TimeField(
        label="Slot start",
        required=False,
        help_text="Slots start on fixed boundaries; the times are in your zone.",
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
    )
    # At most what fits the horizon (the service says so precisely); the bound keeps times in range.
    slots = forms.IntegerField(label="Slots", min_value=1, initial=1)
    team = forms.ModelChoiceField(
        queryset=Team.objects.none(), label="Team", required=False, empty_label="Choose the team to charge"
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["team"].queryset = teams = policy.bookable_teams(user)
        mine = list(Team.objects.filter(memberships__user=user)[:2])
        if len(mine) == 1:
            # Charged to the only team unless a staff member picks another.
            self.fields["team"].initial = mine[0].pk
            self.fields["team"].empty_label = None if teams.count() == 1 else self.fields["team"].empty_label

    def clean_date(self):
        day = self.cleaned_data["date"]
        today = timezone.localdate()
        last = today + timedelta(days=settings.BOOKING_HORIZON_DAYS + 1)
        if day is not None and not today - timedelta(days=1) <= day <= last:
            raise forms.ValidationError(f"Pick a day from today to {last:%Y-%m-%d}.")
        return day

    def clean_slots(self):
        slots = self.cleaned_data["slots"]
        most = settings.BOOKING_HORIZON_DAYS * 24 * 60 // settings.SLOT_MINUTES + 1
        if slots > most:
            raise forms.ValidationError(f"At most {most} slots: the booking horizon is {settings.BOOKING_HORIZON_DAYS} days.")
        return slots

    def clean_more(self):
        more = self.cleaned_data["more"] or 0
        if more and len({g.node_id for g in self.cleaned_data.get("gpus") or []}) > 1:
            raise forms.ValidationError("Pick GPUs of one node to add more of that node's GPUs.")
        return more

    def clean(self):
        data = super().clean()
        day, slot = data.get("date"), data.get("slot")
        if data.get("start_now"):
            data["start"] = policy.NOW
        elif day is None or slot is None:
            for name in ("date", "slot"):
                if data.get(name) is None and name not in self.errors:
                    self.add_error(name, "This field is required (or tick \"Start now\").")
        else:
            start = slot_start(day, slot, timezone.get_current_timezone())
            if start is None:
                self.add_error("slot", f"There is no {slot:%H:%M} on {day:%Y-%m-%d} in your zone (the clocks change): pick another slot.")
            else:
                data["start"] = start
        return data

    def window(self, now):
        """The (start, end) the form asks for, as the booking service will read it."""
        start, slots = self.cleaned_data["start"], self.cleaned_data["slots"]
        if start == policy.NOW:
            return policy.now_window(now, slots)
        return start, start + slots * policy.slot_length()

    @property
    def gpu_count(self):
        """How many GPUs the form asks for: those picked and "this many more"."""
        return len(self.cleaned_data["gpus"]) + (self.cleaned_data.get("more") or 0)


# --- Repeating a booking (a series: reservations.services.series) ---------------------------------

REPEAT_CHOICES = [
    ("none", "Does not repeat"),
    ("daily", "Every day"),
    ("weekdays", "Every weekday (Monday to Friday)"),
    ("weekly", "Every week, on the days ticked"),
]
WEEKDAY_CHOICES = [
    (code, recurrence.DAY_NAMES[code][:3]) for code in recurrence.WEEKDAYS
]
WEEKDAY_CODES = list(recurrence.WEEKDAYS)  # date.weekday()'s order: Monday first
ENDS_CHOICES = [("count", "After a number of times"), ("until", "On a day")]
ON_CONFLICT_CHOICES = [
    (Series.OnConflict.FAIL, "Book nothing, and show me which"),
    (Series.OnConflict.SKIP, "Skip it and book the others"),
    (Series.OnConflict.WAITLIST, "Put it on the waitlist"),
]


class RepeatFields(forms.Form):
    """"Repeat", when it ends and what to do with an occurrence that is taken: turned into the RRULE
    of the series (the subset reservations.recurrence reads) and its occurrences' starts, in the
    viewer's zone, so that the wall-clock time stays when the clocks change. A form that uses these
    fields also has the window's (date, slot, slots, start_now, more)."""

    repeat = forms.ChoiceField(label="Repeat", choices=REPEAT_CHOICES, initial="none", required=False)
    days = forms.MultipleChoiceField(
        label="On", choices=WEEKDAY_CHOICES, required=False, widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: the first day's weekday.",
    )
    ends = forms.ChoiceField(
        label="Ends", choices=ENDS_CHOICES, initial="count", required=False, widget=forms.RadioSelect
    )
    count = forms.IntegerField(
        label="Times", min_value=1, initial=4, required=False, widget=forms.NumberInput(attrs={"aria-label": "Times"})
    )
    until = forms.DateField(
        label="Last day", required=False, widget=forms.DateInput(attrs={"type": "date", "aria-label": "Last day"})
    )
    on_conflict = forms.ChoiceField(
        label="If an occurrence is taken", choices=ON_CONFLICT_CHOICES, initial=Series.OnConflict.FAIL, required=False
    )

    @property
    def repeating(self):
        return (self.data.get("repeat") or "none") != "none" if self.is_bound else False

    def clean_count(self):
        count, most = self.cleaned_data["count"], settings.SERIES_MAX_OCCURRENCES
        if count is not None and count > most:
            raise forms.ValidationError(f"At most {most} times.")
        return count

    def clean(self):
        data = super().clean()
        data["rule"] = data["starts"] = None
        if (data.get("repeat") or "none") == "none":
            return data
        data["on_conflict"] = data.get("on_conflict") or Series.OnConflict.FAIL
        if data.get("start_now"):
            self.add_error("start_now", "A repeating booking starts on a slot: untick \"Start now\" and pick the first day and slot.")
            return data
        if data.get("more"):
            self.add_error("more", "A repeating booking books the GPUs picked: pick all of them (Ctrl or Shift for several).")
            return data
        text = self._rule_text(data)
        if text is None or data.get("start") is None:
            return data
        # The series' zone: the viewer's (the form's date and slot are read in it too).
        data["tz"] = timezone.get_current_timezone_name()
        ends = "until" if data.get("ends") == "until" else "count"
        try:
            data["starts"] = recurrence.expand(recurrence.parse_rule(text), data["start"], recurrence.zone(data["tz"]))
        except BookingError as error:
            most = settings.SERIES_MAX_OCCURRENCES
            message = error.message
            if message.startswith("The rule gives more than"):
                message = f"That makes more than {most} occurrences: end it sooner."
            elif message.startswith("The rule gives no occurrence"):
                message = "No occurrence falls between the first day and this one."
            self.add_error(ends if error.field == recurrence.FIELD else None, message)
            return data
        data["rule"] = text
        return data

    def _rule_text(self, data):
        """The RRULE the fields describe, or None (with the field's error)."""
        repeat = data["repeat"]
        parts = ["FREQ=DAILY"] if repeat == "daily" else ["FREQ=WEEKLY"]
        if repeat == "weekdays":
            parts.append("BYDAY=MO,TU,WE,TH,FR")
        elif repeat == "weekly":
            days = data.get("days") or ([WEEKDAY_CODES[data["date"].weekday()]] if data.get("date") else [])
            if days:
                parts.append("BYDAY=" + ",".join(sorted(days, key=WEEKDAY_CODES.index)))
        if data.get("ends") == "until":
            until = data.get("until")
            if until is None:
                if "until" not in self.errors:
                    self.add_error("until", "Give the last day.")
                return None
            if data.get("date") and until < data["date"]:
                self.add_error("until", "The last day is before the first.")
                return None
            parts.append(f"UNTIL={until:%Y%m%d}")
        else:
            count = data.get("count")
            if count is None:
                if "count" not in self.errors:
                    self.add_error("count", "Say how many times.")
                return None
            parts.append(f"COUNT={count}")
        return ";".join(parts)


class QuotaPreviewForm(BookingWindowForm):
    """The booking form's selection, as its quota preview reads it (web.views.calendar.quota_preview)."""

    borrow = forms.BooleanField(required=False)

    # The fields a person fills in before the preview has anything to say.
    NEEDED = ("gpus", "slots")

    def is_complete(self):
        """Whether enough is filled in to preview (GPUs, slots, and a day and slot or "start now"):
        a half-filled form is no error, only nothing to say yet."""
        data = self.data
        if not all(data.get(name) for name in self.NEEDED):
            return False
        return bool(data.get("start_now")) or bool(data.get("date") and data.get("slot"))


class SeriesPreviewForm(RepeatFields, BookingWindowForm):
    """The booking form's selection and repeat, as its occurrences' preview reads them
    (web.views.calendar.series_preview)."""

    priority = forms.ChoiceField(choices=Reservation.Priority.choices, required=False)
    borrow = forms.BooleanField(required=False)

    def is_complete(self):
        """Whether enough is filled in to list the occurrences: GPUs, slots, a day and a slot."""
        data = self.data
        return all(data.get(name) for name in ("gpus", "slots", "date", "slot"))


class BookingForm(RepeatFields, BookingWindowForm):
    # The order the form's errors are listed in (_result.html), as the form shows its fields.
    field_order = [
        "gpus", "more", "start_now", "date", "slot", "slots", "repeat", "days", "ends", "count", "until", "on_conflict",
        "title", "team",
    ]

    title = forms.CharField(label="Title", max_length=200, required=False)
    priority = forms.ChoiceField(label="Priority", choices=Reservation.Priority.choices, initial="normal")
    preemptible = forms.BooleanField(
        label="Preemptible (others of higher priority may take these GPUs, with notice)", required=False
    )
    auto_rebook = forms.BooleanField(label="If preempted, rebook the rest and resume", required=False, initial=True)
    waitlist = forms.BooleanField(label="If taken, wait for the window to free", required=False)
    # Over the team's quota: booked as borrowed time rather than refused (services.quota).
    borrow = forms.BooleanField(label="Borrow idle GPUs if over quota", required=False)
    # The training job, when `train` is ticked.
    train = forms.BooleanField(label="Train a model in this booking", required=False)
    model = forms.CharField(label="Model", max_length=500, required=False, initial="yolov8n.yaml")
    # The datasets found under TRAINING_DATA_ROOTS are offered (the template's datalist); any other
    # path is checked as the API checks it.
    data = forms.CharField(
        label="Dataset (data.yaml)", max_length=500, required=False,
        widget=forms.TextInput(attrs={"list": "dataset-choices", "aria-describedby": "data-help", "spellcheck": "false"}),
    )
    epochs = forms.IntegerField(label="Epochs", min_value=1, max_value=10_000, initial=10, required=False)
    # A GPU's sizes until a GPU is chosen; then the chosen device's (calendar.js, trainer.spec.suggested_size).
    imgsz = forms.IntegerField(label="Image size", min_value=32, max_value=8192, initial=GPU_SIZE.imgsz, required=False)
    batch = forms.IntegerField(label="Batch", min_value=1, max_value=4096, initial=GPU_SIZE.batch, required=False)
    resume_from = RecentChoiceField(
        queryset=TrainingJob.objects.none(), label="Resume from", required=False, empty_label=RESUME_EMPTY_LABEL
    )
    # Repeating: each occurrence's job continues from the previous occurrence's checkpoint.
    resume_previous = forms.BooleanField(
        label="Each occurrence continues from the previous one's checkpoint", required=False
    )
    # The models to serve, when `serve` is ticked: names of the team's registry ("defects" is its
    # latest version at the slot start, "defects:2" that version).
    serve = forms.BooleanField(label="Serve registered models in this booking", required=False)
    serve_models = forms.MultipleChoiceField(label="Models", required=False, choices=[])
    preload = forms.BooleanField(label="Preload them and keep them loaded", required=False)
    max_batch = forms.IntegerField(
        label="Largest batch", min_value=1, max_value=64, initial=8, required=False,
        help_text="Requests for a model arriving together run as one batch of up to this many images.",
    )
    # Set by the preemption preview's "Book and preempt" button, with the bookings it showed.
    confirm_preempt = forms.BooleanField(required=False, widget=forms.HiddenInput)
    victims = forms.CharField(required=False, max_length=2000, widget=forms.HiddenInput)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, user=user, **kwargs)
        if not user.has_perm("reservations.book_high_priority"):
            self.fields["priority"].choices = [c for c in Reservation.Priority.choices if c[0] != "high"]
        # My teams' jobs that left a checkpoint to resume from: any of them is accepted, the most
        # recent are offered (and the one chosen, e.g. from a booking page's "resume" link).
        resume = self.fields["resume_from"]
        resume.queryset = resumable_jobs(user)
        resume.chosen = self.data.get("resume_from") if self.is_bound else self.initial.get("resume_from")
        self.fields["serve_models"].choices = servable_models(user)
        self.fields["resume_from"].label_from_instance = resume_label

    def clean_victims(self):
        raw = self.cleaned_data["victims"]
        ids = raw.split(",") if raw else []
        if not all(i.isascii() and i.isdigit() for i in ids):
            raise forms.ValidationError("Not a list of booking ids.")
        return {int(i) for i in ids}

    def clean(self):
        data = super().clean()
        if data.get("train"):
            data["job"] = self._job_spec(data)
        if data.get("serve"):
            data["serve"] = self._serve_spec(data)
        else:
            data["serve"] = None
        return data

    def _serve_spec(self, data):
        """The serving spec as the API takes it, checked by the same serializer the API uses."""
        if data.get("train"):
            self.add_error("serve", "A booking trains or serves, not both: untick one.")
            return None
        models = data.get("serve_models") or []
        if not models:
            self.add_error("serve_models", "Pick at least one model to serve.")
            return None
        spec = {"models": models, "preload": models if data.get("preload") else []}
        if data.get("max_batch"):
            spec["max_batch"] = data["max_batch"]
        return self._checked("serve", spec)

    def _job_spec(self, data):
        """The training job as the API takes it, checked by the same serializer the API uses."""
        spec = {key: data[key] for key in ("model", "data", "epochs", "imgsz", "batch") if data.get(key) not in (None, "")}
        if data.get("resume_previous"):
            if not self.repeating:
                self.add_error("resume_previous", "Only a repeating booking has a previous occurrence: pick a job under Resume from.")
                return None
            if data.get("resume_from") is not None:
                self.add_error("resume_previous", "Resume from one job or from the previous occurrence, not both.")
                return None
            spec["resume_from"] = "previous"
        elif data.get("resume_from") is not None:
            spec["resume_from"] = data["resume_from"].pk
        return self._checked("job", spec)

    def _checked(self, field, spec):
        return checked_spec(self, field, spec)


def checked_spec(form, field, spec):
    """`spec` through the API's serializer for `field` (job, serve); its errors on `form`'s own
    fields (model, data, epochs, ...), the rest on the form. None when refused."""
    serializer = jobs.work_kinds.spec_serializer(field)
    serializer.bind(field, None)
    try:
        return serializer.run_validation(spec)
    except APIValidationError as exc:
        detail = exc.detail if isinstance(exc.detail, dict) else {field: exc.detail}
        for key, messages in detail.items():
            own = key if key in form.fields else None
            for message in messages if isinstance(messages, list) else [messages]:
                form.add_error(own, str(message) if own else f"{key}: {message}")
        return None


class SeriesJobForm(forms.Form):
    """The training job a series' coming occurrences carry (its page's "Training job"), checked as
    the API checks a job; `train` unticked: they carry none."""

    train = forms.BooleanField(label="Train a model in each occurrence", required=False)
    model = forms.CharField(label="Model", max_length=500, required=False)
    data = forms.CharField(label="Dataset (data.yaml)", max_length=500, required=False)
    epochs = forms.IntegerField(label="Epochs", min_value=1, max_value=10_000, required=False)
    imgsz = forms.IntegerField(label="Image size", min_value=32, max_value=8192, required=False)
    batch = forms.IntegerField(label="Batch", min_value=1, max_value=4096, required=False)
    resume_previous = forms.BooleanField(label="Each occurrence continues from the previous one's checkpoint", required=False)
    reason = forms.CharField(label="Reason", max_length=2000, required=False, help_text="Required when the series is not yours.")

    @classmethod
    def initial_of(cls, job):
        """The form's values for a series' job template (None: no job)."""
        if not job:
            return {"train": False, "model": "yolov8n.yaml", "epochs": 10}
        fields = {name: job.get(name) for name in ("model", "data", "epochs", "imgsz", "batch")}
        return {"train": True, "resume_previous": job.get("resume_from") == "previous", **fields}

    def clean(self):
        data = super().clean()
        data["job"] = None
        if data.get("train"):
            spec = {key: data[key] for key in ("model", "data", "epochs", "imgsz", "batch") if data.get(key) not in (None, "")}
            if data.get("resume_previous"):
                spec["resume_from"] = "previous"
            data["job"] = checked_spec(self, "job", spec)
        return data



def slot_start(day, slot, zone):
    """The moment a person means by a day and a wall time in their zone, or None if the clocks skip
    it. A wall time that happens twice (clocks go back) is read as the one on the slot grid."""
    wall = datetime.combine(day, time(slot.hour, slot.minute))
    readings = []
    for fold in (0, 1):
        # Through UTC: Python compares and converts datetimes of one tzinfo as wall times.
        moment = wall.replace(fold=fold, tzinfo=zone).astimezone(dt_timezone.utc)
        if moment.astimezone(zone).replace(tzinfo=None) == wall and moment not in readings:
            readings.append(moment)
    if not readings:
        return None
    on_grid = [m for m in readings if policy.is_on_boundary(m)]
    return (on_grid or readings)[0]
