"""`python -m routing`: the front door under uvicorn on ROUTER_HOST:ROUTER_PORT (scheduler.settings).

One process, one event loop: a request waiting on a replica holds a coroutine, not a thread. Run
more of them (more machines, pods or ports) behind any HTTP load balancer to scale out: each reads
the replicas from the database and checks them itself, and the team rate limits are counted in Redis.
Logging is Django's (LOGGING): uvicorn's access log is off, the front door logs a line per request."""

import os

import uvicorn
from django.conf import settings

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler.settings")
    uvicorn.run(
        "routing.asgi:app", host=settings.ROUTER_HOST, port=settings.ROUTER_PORT, log_config=None,
        access_log=False, proxy_headers=False, lifespan="on", timeout_graceful_shutdown=30,
    )
