from datetime import timezone as dt_timezone

from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination, PageNumberPagination


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class NewestFirstCursorPagination(CursorPagination):
    """Keyset pages of a log that grows for years (the audit log), newest first: each page is an
    index range from the last one's position, whatever its depth, and no count (a count would read
    the whole log). `{"next", "previous", "results"}`; follow `next`."""

    ordering = ("-created", "-id")
    page_size = Pagination.page_size
    page_size_query_param = Pagination.page_size_query_param
    max_page_size = Pagination.max_page_size

    def decode_cursor(self, request):
        # DRF checks the cursor's encoding, not its position: a forged one (p=not-a-time) would
        # reach the database's filter as a 500. Its position is a `created` time, or nothing.
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            try:
                moment = parse_datetime(cursor.position)
                # Aware, and a moment every database can hold in UTC (SQLite's conversion of
                # 0001-01-01T00:00+01:00 would overflow).
                valid = moment is not None and moment.tzinfo is not None and moment.astimezone(dt_timezone.utc) is not None
            except (ValueError, OverflowError):
                valid = False
            if not valid:
                raise NotFound(self.invalid_cursor_message)
        return cursor
