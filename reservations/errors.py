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
