"""Per-team rate limits (ROUTER_TEAM_RATE, a rate like the API's throttles: "100/second",
"600/minute", or off), counted in fixed windows in Redis so every front door shares them; in this
process's memory when the broker is not Redis (one front door only)."""

import logging
import math
import time

import redis.asyncio as aioredis
from rest_framework.throttling import SimpleRateThrottle

log = logging.getLogger("routing")

WARN_EVERY_SECONDS = 60  # Redis down: one warning a minute, not one per request


class _Rate(SimpleRateThrottle):
    """Only for DRF's own reading of a rate, which settings.env_rate has checked at start-up."""

    def __init__(self):  # no scope, no cache: nothing but parse_rate is used
        pass


def parse_rate(rate):
    """"100/second" -> (100, 1): requests per period seconds, read as DRF reads the API's rates;
    (None, None) for no limit (ROUTER_TEAM_RATE=off)."""
    return _Rate().parse_rate(rate)


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
        if self.limit is None:
            return None
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
