"""`python -m routing`: the front door under uvicorn on ROUTER_HOST:ROUTER_PORT (scheduler.settings).

One process, one event loop: a request waiting on a replica holds a coroutine, not a thread. Run
more of them (more machines, pods or ports) behind any HTTP load balancer to scale out: each reads
the replicas from the database and checks them itself, and the team rate limits are counted in Redis.
Logging is Django's (LOGGING): uvicorn's access log is off, the front door logs a line per request."""

import os

import uvicorn
from django.conf import settings

from serving.http_deadline import with_head_deadline

# A request's head (line and headers) may be this large; idle kept-alive connections close after
# KEEP_ALIVE_SECONDS, and one that has not sent a whole head within ROUTER_HEADER_SECONDS of
# connecting or of its last answer is closed (serving.http_deadline: uvicorn has no such timeout).
MAX_HEAD_BYTES = 16 * 1024
KEEP_ALIVE_SECONDS = 5

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler.settings")
    uvicorn.run(
        "routing.asgi:app", host=settings.ROUTER_HOST, port=settings.ROUTER_PORT, log_config=None,
        access_log=False, proxy_headers=False, lifespan="on", timeout_graceful_shutdown=30,
        http=with_head_deadline(settings.ROUTER_HEADER_SECONDS), h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
