"""The forms of "My bookings" and a booking's page: cancel, transfer, move. They only parse; who may
do what, and what a valid move is, the services decide (reservations.policy)."""

from django import forms
from django.conf import settings

# Where an action's form was, so that an error is shown there and success returns there.
NEXT_CHOICES = (("list", "My bookings"), ("booking", "The booking's page"))
# A booking is at most the booking horizon long; the service says so precisely, this only keeps
# absurd numbers out of the arithmetic.
MAX_SLOTS = 10_000


class ActionForm(forms.Form):
    next = forms.ChoiceField(choices=NEXT_CHOICES, required=False, widget=forms.HiddenInput)
    page = forms.IntegerField(min_value=1, required=False, widget=forms.HiddenInput)
    reason = forms.CharField(
        label="Reason",
        max_length=2000,
        required=False,
        help_text="Required when the booking is not yours.",
    )


class CancelForm(ActionForm):
    pass


class TransferForm(ActionForm):
    to = forms.CharField(
        label="New owner (username)",
        max_length=150,
        error_messages={"required": "Give the username of the person to transfer it to."},
    )
    field_order = ["to", "reason"]


class MoveForm(ActionForm):
    # A datetime-local field gives a time without a zone: it is read in the viewer's zone (Django
    # makes naive input aware in the active zone). A suggestion's button sends an ISO time with its
    # offset instead, which is taken as it is.
    start = forms.DateTimeField(
        label="New start",
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        error_messages={"required": "Give the new start.", "invalid": "Give the new start as a date and time."},
    )
    slots = forms.IntegerField(
        label="Slots",
        min_value=1,
        max_value=MAX_SLOTS,
        error_messages={"required": "Give the number of slots."},
    )
    # Set by a suggestion to move to other GPUs (e.g. off one the health check took out).
    gpus = forms.CharField(required=False, max_length=2000, widget=forms.HiddenInput)
    field_order = ["start", "slots", "reason"]

    def clean_gpus(self):
        raw = self.cleaned_data["gpus"]
        if not raw:
            return None
        ids = raw.split(",")
        if not all(i.isascii() and i.isdigit() and len(i) < 19 for i in ids):
            raise forms.ValidationError("Not a list of GPU ids.")
        return [int(i) for i in ids]

    def __init__(self, *args, slot_seconds=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["start"].widget.attrs["step"] = slot_seconds or settings.SLOT_MINUTES * 60
        self.fields["slots"].help_text = f"Slots of {settings.SLOT_MINUTES} minutes."
