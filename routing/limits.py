"""Per-team rate limits (ROUTER_TEAM_RATE, "N/second" or "N/minute"), counted in fixed windows in
Redis so every front door shares them; in this process's memory when the broker is not Redis (one
front door only)."""

import logging
import math
import re
import time

import redis.asyncio as aioredis
from django.core.exceptions import ImproperlyConfigured

log = logging.getLogger("routing")

WARN_EVERY_SECONDS = 60  # Redis down: one warning a minute, not one per request
PERIODS = {"second": 1, "minute": 60, "hour": 3600}
_RATE = re.compile(r"\s*([1-9][0-9]*)\s*/\s*(second|minute|hour)\s*")


def parse_rate(text):
    """"100/second" -> (100, 1): requests per period seconds."""
    match = _RATE.fullmatch(text or "")
    if not match:
        raise ImproperlyConfigured(f"ROUTER_TEAM_RATE must be like 100/second or 600/minute, got {text!r}")
    return int(match[1]), PERIODS[match[2]]


class TeamRateLimit:
    """`await hit(team_id)` counts one request and returns None while the team is within its rate,
    else the seconds until its window ends (for Retry-After)."""

    def __init__(self, rate, redis_url=None, clock=time.time):
        self.limit, self.period = parse_rate(rate)
        self.clock = clock
        self.redis = aioredis.Redis.from_url(redis_url, socket_timeout=1) if redis_url else None
        self.counts = {}  # (team, window) -> count, without Redis
        self.warned_at = None  # when (self.clock) Redis's failure was last logged
        self.missed = 0  # requests not counted since then

    async def hit(self, team_id):
        now = self.clock()
        window = int(now // self.period)
        retry_after = max(1, math.ceil((window + 1) * self.period - now))
        if self.redis is None:
            key = (team_id, window)
            if key not in self.counts:
                self.counts = {k: v for k, v in self.counts.items() if k[1] == window}
            self.counts[key] = count = self.counts.get(key, 0) + 1
        else:
            key = f"router:rate:{team_id}:{self.period}:{window}"
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    count, _ = await pipe.incr(key).expire(key, self.period + 1).execute()
            except (aioredis.RedisError, OSError) as exc:
                # Inference goes on without the limit rather than stopping with Redis.
                self.missed += 1
                if self.warned_at is None or now - self.warned_at >= WARN_EVERY_SECONDS:
                    log.warning("rate limit not counted for %d request(s) (Redis: %s)", self.missed, exc)
                    self.warned_at, self.missed = now, 0
                return None
        return retry_after if count > self.limit else None

    async def close(self):
        if self.redis is not None:
            await self.redis.aclose()
