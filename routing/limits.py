"""Per-team rate limits (ROUTER_TEAM_RATE, a rate like the API's throttles: "100/second",
"600/minute", or off), counted by `limits` in fixed windows in the cache the API's throttles use
(CACHE_URL): with a Redis there, every front door shares the counts. Without one (the quick start),
each front door counts in its own memory, as each web worker then counts the API's throttles apart:
start-up says so in the log."""

import logging
import math
import time

import limits
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool

log = logging.getLogger("routing")

WARN_EVERY_SECONDS = 60  # Redis down: one warning a minute, not one per request
KEY_PREFIX = "router-rate"  # apart from Django's cache keys in the same Redis database


def storage_for(cache_url):
    """`limits` storage in the Redis of `cache_url` (redis://, rediss://, unix://, as CACHE_URL takes
    them), and the connection pool to close at the end; this process's memory without one."""
    if not cache_url.startswith(("redis://", "rediss://", "unix://")):
        return MemoryStorage(), None
    pool = ConnectionPool.from_url(cache_url, socket_timeout=1, socket_connect_timeout=1)
    uri = "async+" + cache_url.replace("unix://", "redis+unix://", 1)
    storage = RedisStorage(uri, implementation="redispy", wrap_exceptions=True, key_prefix=KEY_PREFIX,
                           connection_pool=pool)
    return storage, pool


class TeamRateLimit:
    """`await hit(team_id)` counts one request and returns None while the team is within its rate,
    else the whole seconds until its window ends (for Retry-After)."""

    def __init__(self, rate, cache_url="", clock=time.monotonic):
        self.rate = limits.parse(rate) if rate else None
        storage, self.pool = storage_for(cache_url)
        if self.pool is None and self.rate is not None:
            log.warning("ROUTER_TEAM_RATE is counted in this front door's memory: set CACHE_URL to a Redis "
                        "so that every front door shares the team rate limits")
        self.limiter = FixedWindowRateLimiter(storage)
        self.clock = clock  # for the warnings only; `limits` keeps its windows by the wall clock
        self.warned_at = None  # when (self.clock) Redis's failure was last logged
        self.missed = 0  # requests not counted since then

    async def hit(self, team_id):
        if self.rate is None:
            return None
        team = str(team_id)
        try:
            if await self.limiter.hit(self.rate, team):
                return None
            reset_at, _ = await self.limiter.get_window_stats(self.rate, team)
        except StorageError as exc:
            # Inference goes on without the limit rather than stopping with Redis.
            self._missed(exc.storage_error)
            return None
        return max(1, math.ceil(reset_at - time.time()))

    def _missed(self, error):
        self.missed += 1
        now = self.clock()
        if self.warned_at is None or now - self.warned_at >= WARN_EVERY_SECONDS:
            log.warning("rate limit not counted for %d request(s) (Redis: %s)", self.missed, error)
            self.warned_at, self.missed = now, 0

    async def close(self):
        if self.pool is not None:
            await self.pool.aclose()
