from django.apps import AppConfig


class WebConfig(AppConfig):
    """The people's pages: sign-in, the calendar, bookings, notices, calendar feeds.

    An edge like the REST API: it parses, calls the services and selectors of `reservations` and
    `trainer`, and renders. Nothing imports it.
    """

    name = "web"
    verbose_name = "Pages"
