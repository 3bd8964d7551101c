from django.urls import path
from rest_framework.routers import DefaultRouter

from . import reports, series, teams, tokens, views

# No ".json" suffix routes: the API answers JSON (its Accept header or ?format= picks another
# renderer), and DRF passes the suffix to extra actions (cancel, move, transfer) that do not take it.
router = DefaultRouter()
router.include_format_suffixes = False
router.register("gpus", views.GPUViewSet)
router.register("nodes", views.NodeViewSet)
router.register("reservations", views.ReservationViewSet, basename="reservation")
router.register("notices", views.NoticeViewSet, basename="notice")
router.register("audit", views.AuditViewSet)
router.register("teams", teams.TeamViewSet, basename="team")
router.register("series", series.SeriesViewSet, basename="series")

urlpatterns = [
    path("availability/", views.AvailabilityView.as_view(), name="availability"),
    path("status/", views.StatusView.as_view(), name="status"),
    path("me/", views.MeView.as_view(), name="me"),
    path("auth/token/", tokens.ObtainTokenView.as_view(), name="auth-token"),
    path("reports/usage/", reports.UsageReportView.as_view(), name="usage-report"),
    *router.urls,
]
