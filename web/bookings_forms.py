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


class NoticeIdsField(forms.Field):
    """The ids of the notices a page showed (one hidden input each)."""

    widget = forms.MultipleHiddenInput
    # A page shows at most a page of notices (views.bookings.NOTICES_PER_PAGE); the bound keeps a
    # crafted post from asking for an unbounded update.
    most = 100

    def to_python(self, value):
        values = value or []
        if len(values) > self.most:
            raise forms.ValidationError(f"At most {self.most} notices at once.")
        # ASCII digits only, as the calendar reads ids: str.isdigit() also accepts "²".
        if not all(isinstance(v, str) and v.isascii() and v.isdigit() and len(v) < 19 for v in values):
            raise forms.ValidationError("Not a list of notice ids.")
        return [int(v) for v in values]


class NoticesReadForm(forms.Form):
    ids = NoticeIdsField(error_messages={"required": "Name the notices to mark read."})
    # The page the form was on, to go back to (only a page of this site).
    next = forms.CharField(max_length=2000, required=False, widget=forms.HiddenInput)
