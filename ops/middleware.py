import time

from django.conf import settings

from .metrics import REQUEST_SECONDS

# Anything else is counted as "other": a client can send any method name, and each would be a series.
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class RequestMetricsMiddleware:
    """Request latency by view. Outermost, so the time includes the other middleware's; labelled by
    the resolved URL's name, never the raw path (ids and typos would make a series each)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        if match is not None:
            view = match.view_name or match._func_path
        elif request.path.startswith("/" + settings.STATIC_URL.lstrip("/")):
            view = "static"  # WhiteNoise answers before any URL is resolved
        else:
            view = "unmatched"
        method = request.method if request.method in METHODS else "other"
        # The status class, not the code: each label value multiplies the series every worker writes
        # and every scrape merges (bench/metrics_scrape.py).
        status = f"{response.status_code // 100}xx"
        REQUEST_SECONDS.labels(view=view, method=method, status=status).observe(
            time.perf_counter() - started
        )
        return response
