"""The calendar's booking form: what a person fills in, turned into the arguments of
reservations.services.reservation_create. The rules themselves stay in reservations.policy: the
form only parses and names the field that is wrong."""

from datetime import datetime, time

from django import forms
from django.utils import timezone
from rest_framework.exceptions import ValidationError as APIValidationError

from reservations import jobs, policy
from reservations.models import GPU, Reservation, Team
from trainer.models import TrainingJob

# The slot boundaries of one day, offered in the booking form's slot field (UTC boundaries shown in
# the viewer's zone): enough for the shortest slot the settings allow.
MAX_SLOTS_PER_BOOKING = 84


class GPUChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, gpu):
        health = "" if gpu.healthy else " (unhealthy)"
        return f"{gpu.name} · {gpu.model}{health}"


class BookingForm(forms.Form):
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
    date = forms.DateField(label="Date", widget=forms.DateInput(attrs={"type": "date"}))
    slot = forms.TimeField(
        label="Slot start",
        help_text="Slots start on fixed boundaries; the times are in your zone.",
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
    )
    slots = forms.IntegerField(label="Slots", min_value=1, max_value=MAX_SLOTS_PER_BOOKING, initial=1)
    title = forms.CharField(label="Title", max_length=200, required=False)
    team = forms.ModelChoiceField(queryset=Team.objects.none(), label="Team", required=False, empty_label=None)
    priority = forms.ChoiceField(label="Priority", choices=Reservation.Priority.choices, initial="normal")
    preemptible = forms.BooleanField(
        label="Preemptible (others of higher priority may take these GPUs, with notice)", required=False
    )
    auto_rebook = forms.BooleanField(label="If preempted, rebook the rest and resume", required=False, initial=True)
    waitlist = forms.BooleanField(label="If taken, wait for the window to free", required=False)
    # The training job, when `train` is ticked.
    train = forms.BooleanField(label="Train a model in this booking", required=False)
    model = forms.CharField(label="Model", max_length=500, required=False, initial="yolov8n.yaml")
    data = forms.CharField(label="Dataset (data.yaml)", max_length=500, required=False)
    epochs = forms.IntegerField(label="Epochs", min_value=1, max_value=10_000, initial=10, required=False)
    imgsz = forms.IntegerField(label="Image size", min_value=32, max_value=8192, initial=640, required=False)
    batch = forms.IntegerField(label="Batch", min_value=1, max_value=4096, initial=16, required=False)
    resume_from = forms.ModelChoiceField(
        queryset=TrainingJob.objects.none(), label="Resume from", required=False, empty_label="— a new run —"
    )
    # Set by the preemption preview's "Book and preempt" button.
    confirm_preempt = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["team"].queryset = Team.objects.filter(memberships__user=user) if not user.is_staff else Team.objects.all()
        if not user.has_perm("reservations.book_high_priority"):
            self.fields["priority"].choices = [c for c in Reservation.Priority.choices if c[0] != "high"]
        # My earlier jobs, and my teams', that left a checkpoint to resume from.
        self.fields["resume_from"].queryset = (
            TrainingJob.objects.filter(reservation__team__memberships__user=user)
            .exclude(checkpoint="")
            .select_related("reservation")
            .order_by("-created")
            .distinct()
        )
        self.fields["resume_from"].label_from_instance = lambda job: (
            f"job {job.pk}: {job.reservation.title or 'untitled'} (epoch {job.checkpoint_epoch or job.epoch} of {job.epochs})"
        )

    def clean(self):
        data = super().clean()
        day, slot = data.get("date"), data.get("slot")
        if day is not None and slot is not None:
            # The date and slot are the viewer's wall time (web.middleware activates their zone).
            data["start"] = timezone.make_aware(datetime.combine(day, time(slot.hour, slot.minute)))
        if data.get("train"):
            data["job"] = self._job_spec(data)
        return data

    def _job_spec(self, data):
        """The training job as the API takes it, checked by the same serializer the API uses."""
        spec = {key: data[key] for key in ("model", "data", "epochs", "imgsz", "batch") if data.get(key) not in (None, "")}
        if data.get("resume_from") is not None:
            spec["resume_from"] = data["resume_from"].pk
        serializer = jobs.hooks().spec_serializer()
        serializer.bind("job", None)
        try:
            return serializer.run_validation(spec)
        except APIValidationError as exc:
            # Name the form's own field where there is one (model, data, epochs, ...).
            detail = exc.detail if isinstance(exc.detail, dict) else {"job": exc.detail}
            for key, messages in detail.items():
                field = key if key in self.fields else None
                for message in messages if isinstance(messages, list) else [messages]:
                    self.add_error(field, str(message) if field else f"{key}: {message}")
            return None

    def window_end(self):
        return self.cleaned_data["start"] + self.cleaned_data["slots"] * policy.slot_length()
