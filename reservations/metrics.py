"""Event metrics of the booking side, recorded where they happen (prometheus_client objects).

Under gunicorn and Celery with PROMETHEUS_MULTIPROC_DIR set, each process writes its values to files
there and the web's /metrics (ops) adds them up; without it they live in this process only. Counts
that the database already holds (bookings, waitlist, preemptions) are read at scrape time by
ops.collectors instead, so they are right whichever process made the change.
"""

from prometheus_client import Counter, Histogram

TICK_SECONDS = Histogram(
    "gpu_scheduler_tick_duration_seconds",
    "How long beat's tick took (reclaims, status changes, waitlist, pruning).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BOOKING_TRANSITIONS = Counter(
    "gpu_scheduler_booking_transitions",
    "Bookings the clock moved along, by the status they reached.",
    ["to"],
)
