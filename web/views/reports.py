"""The staff usage report: per team, booked against used GPU-hours and what happened to the
bookings. The rules of what counts are the selector's (reservations.selectors.usage_report); this
view reads the period from the form and renders."""

from datetime import date, datetime, time, timedelta

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.validators import MaxValueValidator, MinValueValidator
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from reservations import selectors
from reservations.errors import BookingError


# The API's bounds (apibase.fields): far enough inside Python's years 1 to 9999 that the
# day after the end, the default period before it and the zone's offset all stay representable.
YEARS = "Give a date between the years 1000 and 9000."
DAYS = [MinValueValidator(date(1000, 1, 1), YEARS), MaxValueValidator(date(8999, 12, 31), YEARS)]


class PeriodForm(forms.Form):
    """Whole days in the viewer's zone, both ends included (the API takes exact times)."""

    start = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}), label="From", validators=DAYS,
    )
    end = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}), label="To (included)", validators=DAYS,
    )

    def period(self, now):
        """[start, end) as aware datetimes (None for the selector's default), or BookingError."""
        zone = timezone.get_current_timezone()
        start, end = self.cleaned_data.get("start"), self.cleaned_data.get("end")
        try:
            start = timezone.make_aware(datetime.combine(start, time.min), zone) if start else None
            end = timezone.make_aware(datetime.combine(end + timedelta(days=1), time.min), zone) if end else None
        except (OverflowError, ValueError):  # 9999-12-31 plus a day
            raise BookingError("end", "Give a date before the year 9999.") from None
        return selectors.usage_period(start=start, end=end, now=now)


@login_required
@require_GET
def usage(request):
    if not request.user.is_staff:
        raise PermissionDenied("The usage report is for staff.")
    now = timezone.now()
    form = PeriodForm(request.GET or None)
    report, period, status = [], None, 200
    if form.is_bound and not form.is_valid():
        status = 400
    else:
        try:
            period = form.period(now) if form.is_bound else selectors.usage_period(now=now)
        except BookingError as exc:
            form.add_error(exc.field, exc.message)
            status = 400
    if period is not None:
        report = selectors.usage_report(start=period[0], end=period[1], now=now)
    chart = {
        "teams": [row["team_name"] for row in report],
        "booked": [row["booked_gpu_hours"] for row in report],
        "used": [row["used_gpu_hours"] for row in report],
    }
    context = {
        "form": form, "period": period, "report": report, "chart": chart,
        "max_days": selectors.USAGE_MAX_PERIOD.days,
    }
    return render(request, "web/reports/usage.html", context, status=status)
