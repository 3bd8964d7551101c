"""The forms of "My bookings", a booking's page and a series' page: cancel, transfer, move, change. They only parse; who may
do what, and what a valid move is, the services decide (reservations.policy)."""

from django import forms
from django.conf import settings

from apibase.fields import parse_aware_datetime
from reservations.models import Reservation

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


# --- A series' page ------------------------------------------------------------------------------


class SeriesActionForm(forms.Form):
    reason = forms.CharField(
        label="Reason", max_length=2000, required=False, help_text="Required when the series is not yours."
    )


class SeriesCancelForm(SeriesActionForm):
    SCOPES = (("one", "This occurrence"), ("following", "This one and the following"), ("all", "The whole series"))

    scope = forms.ChoiceField(choices=SCOPES, widget=forms.HiddenInput)
    # The occurrence's start as its rule gives it (ISO 8601 with its offset), for "one" and "following".
    occurrence = forms.CharField(required=False, max_length=40, widget=forms.HiddenInput)

    @staticmethod
    def moment(text):
        """The aware moment an occurrence field names, or None."""
        try:
            return parse_aware_datetime(text) if text else None
        except ValueError:  # not a time, no zone, or out of any calendar's range
            return None

    def clean_occurrence(self):
        text = self.cleaned_data["occurrence"]
        if not text:
            return None
        moment = self.moment(text)
        if moment is None:
            raise forms.ValidationError("Not an occurrence's start (an ISO 8601 time with its offset).")
        return moment

    def clean(self):
        data = super().clean()
        if data.get("scope") in ("one", "following") and data.get("occurrence") is None and "occurrence" not in self.errors:
            self.add_error("occurrence", "Name the occurrence to cancel.")
        return data


class SeriesChangeForm(SeriesActionForm):
    title = forms.CharField(label="Title", max_length=200, required=False)
    priority = forms.ChoiceField(label="Priority", choices=Reservation.Priority.choices)
    field_order = ["title", "priority", "reason"]

    def __init__(self, *args, user, current=None, **kwargs):
        super().__init__(*args, **kwargs)
        if not user.has_perm("reservations.book_high_priority"):
            # High stays offered on a series that is high already: a change of its title alone must
            # not lower it (the service refuses raising it to high for those who may not).
            self.fields["priority"].choices = [
                c for c in Reservation.Priority.choices if c[0] != "high" or c[0] == current
            ]


class SeriesTransferForm(SeriesActionForm):
    to = forms.CharField(
        label="New owner (username)", max_length=150,
        widget=forms.TextInput(attrs={"list": "team-members", "autocomplete": "off"}),
        error_messages={"required": "Give the username of the person to transfer it to."},
    )
    field_order = ["to", "reason"]
