from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import path
from django.utils.functional import lazy
from django.views.generic import RedirectView

from .signin import SignInView
from .views import account, bookings, calendar, ical, reports, series

app_name = "web"

urlpatterns = [
    # Sign-in (django.contrib.auth's views, our templates; LDAP or local accounts behind them).
    path("login/", SignInView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # The calendar and the booking form.
    path("", calendar.calendar_page, name="calendar"),
    path("calendar/events/", calendar.event_feed, name="events"),
    path("book/", calendar.book, name="book"),
    path("book/quota-preview/", calendar.quota_preview, name="quota-preview"),
    path("book/resume-options/", calendar.resume_options, name="resume-options"),
    path("book/series-preview/", series.series_preview, name="series-preview"),
    # My bookings, a booking's page, notices.
    path("bookings/", bookings.my_bookings, name="my-bookings"),
    path("bookings/<int:pk>/", bookings.booking, name="booking"),
    path("bookings/<int:pk>/job/", bookings.booking_job, name="booking-job"),
    path("bookings/<int:pk>/checkpoint/", bookings.booking_checkpoint, name="booking-checkpoint"),
    path("bookings/<int:pk>/cancel/", bookings.booking_cancel, name="booking-cancel"),
    path("bookings/<int:pk>/transfer/", bookings.booking_transfer, name="booking-transfer"),
    path("bookings/<int:pk>/move/", bookings.booking_move, name="booking-move"),
    # A recurring booking's page and its actions.
    path("series/<int:pk>/", series.series_page, name="series"),
    path("series/<int:pk>/cancel/", series.series_cancel_view, name="series-cancel"),
    path("series/<int:pk>/change/", series.series_change_view, name="series-change"),
    path("series/<int:pk>/transfer/", series.series_transfer_view, name="series-transfer"),
    path("series/<int:pk>/job/", series.series_job_view, name="series-job"),
    path("notices/", bookings.notices, name="notices"),
    path("notices/read/", bookings.notices_read, name="notices-read"),
    # The profile: API token, calendar feed links.
    path("profile/", account.profile, name="profile"),
    path("profile/api-token/rotate/", account.api_token_rotate, name="api-token-rotate"),
    path("profile/feeds/<int:feed_id>/rotate/", account.calendar_feed_rotate, name="feed-rotate"),
    # Staff: the usage report.
    path("reports/usage/", reports.usage, name="usage-report"),
    # Browsers and tools that ignore base.html's icon links ask the root for this one. Not permanent:
    # a browser would keep the static URL for good.
    path("favicon.ico", RedirectView.as_view(url=lazy(static, str)("favicon.ico")), name="favicon"),
    # iCal feeds: no sign-in, the secret token in the URL is the credential.
    path("ical/<str:token>.ics", ical.feed, name="ical"),
]
