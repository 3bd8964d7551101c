"""Domain errors raised by the booking services; the API and the admin map them to responses."""


class BookingError(Exception):
    """Bad input for a booking rule: a 400 naming the field."""

    def __init__(self, field, message):
        super().__init__(message)
        self.field = field
        self.message = message

    def as_dict(self):
        return {self.field: [self.message]}


class BookingConflict(Exception):
    """The GPUs are taken for (part of) the window: a 409 with the conflicts and suggestions."""

    def __init__(self, message, *, conflicts, suggestions, earliest_allowed_start=None):
        super().__init__(message)
        self.message = message
        self.conflicts = conflicts
        self.suggestions = suggestions
        # Set when preemption was refused only for lack of notice: the first start that would do.
        self.earliest_allowed_start = earliest_allowed_start


class QuotaExceeded(Exception):
    """The booking would pass its team's quota: a 409 `quota_exceeded` naming the limit, the team's
    use and the limit, when room frees, and how to borrow (excess: a policy.QuotaExcess)."""

    code = "quota_exceeded"

    def __init__(self, excess):
        super().__init__(excess.describe())
        self.excess = excess
        self.message = excess.describe() + " " + self.advice()

    def advice(self):
        excess = self.excess
        if not excess.borrowable:
            return "Borrowing is limited too: wait for the next week or ask your team's admin."
        split = ""
        if excess.limit == "gpu_hours_per_week" and excess.in_quota_slots:
            split = f" or book the first {excess.in_quota_slots} slot(s) within the quota and the rest with borrow,"
        return (
            "Book it as borrowed time (borrow: true): idle GPUs, preemptible, reclaimed with notice when a team "
            f"within its quota needs them;{split} or book when room frees."
        )


class SeriesConflict(Exception):
    """A recurring booking with `on_conflict: fail` whose occurrences cannot all be booked: nothing is
    booked, and the 409 lists each occurrence in the way (`occurrences`: selectors.OccurrencePreview,
    each with its conflicts; `suggestions`: {occurrence start: [Window]})."""

    code = "series_conflict"

    def __init__(self, message, *, occurrences, suggestions):
        super().__init__(message)
        self.message = message
        self.occurrences = occurrences
        self.suggestions = suggestions
