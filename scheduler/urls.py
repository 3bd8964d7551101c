from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from ops import views as ops_views
from web.signin import AdminSignInForm

# The admin's sign-in page checks the username's length as the site's does (web.signin).
admin.site.login_form = AdminSignInForm

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("reservations.api.urls")),
    path("api/v1/", include("trainer.api")),
    path("api/v1/", include("serving.api")),
    path("api/v1/", include("serving.replica_api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Prometheus scrapes it; restricted to METRICS_ALLOWED_IPS or METRICS_BEARER_TOKEN.
    path("metrics", ops_views.metrics, name="metrics"),
    # Where Prometheus finds the replicas to scrape (http_sd_configs); the same access rule.
    path("metrics/replicas", ops_views.replica_targets, name="metrics-replicas"),
    # Its start-up script from its own URL rather than inline, as the Content Security Policy asks.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
    # The pages: the calendar at the root.
    path("", include("web.urls")),
]
