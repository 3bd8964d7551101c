"""One settings module for every deployment, driven by environment variables.

The defaults run the whole product on one machine with no servers (SQLite and kombu's filesystem
broker under var/); production points DATABASE_URL at PostgreSQL and CELERY_BROKER_URL at Redis.
Every helper below fails loudly on a value it cannot read, so a typo never becomes a silent default.
"""

import ipaddress
import os
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
import ldap
import ldap.dn
import ldapurl
from celery.schedules import crontab
from csp.constants import NONCE, NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from django_auth_ldap.config import GroupOfNamesType, LDAPSearch, LDAPSearchUnion

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_str(name, default):
    return os.environ.get(name, default)


def _env_number(name, default, cast, kind, minimum):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be {kind}, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def env_int(name, default, *, minimum=None):
    return _env_number(name, default, int, "an integer", minimum)


def env_float(name, default, *, minimum=None):
    return _env_number(name, default, float, "a number", minimum)


def env_bool(name, default):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def env_list(name, default):
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


_RATE = re.compile(r"(?P<count>[1-9][0-9]*)/(?P<period>s|sec|second|m|min|minute|h|hour|d|day)")
_PERIODS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}


def env_rate(name, default):
    """A DRF throttle rate ("20/minute"), or None for no limit ("off"). DRF itself only reads the
    period's first letter, so "10/mouse" would silently mean per minute: refuse it here."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value == "off":
        return None
    match = _RATE.fullmatch(value)
    if not match:
        raise ImproperlyConfigured(f"{name} must be a rate like 20/minute (second, minute, hour, day) or off, got {raw!r}")
    # Spelt out ("10/min" -> "10/minute"): DRF reads that, and so does `limits` (the front door's).
    return f"{match['count']}/{_PERIODS[match['period'][0]]}"


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off")
    SECRET_KEY = "insecure-development-key-do-not-use-in-production"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# --- HTTPS (README, production) ---
# Off by default: the quick start and the tests speak plain HTTP. Behind a TLS-terminating proxy,
# SECURE_PROXY_SSL_HEADER names the header it sets ("X-Forwarded-Proto", meaning "https"); without
# it every request looks like HTTP to Django and SECURE_SSL_REDIRECT would redirect forever.
_proxy_ssl_header = env_str("SECURE_PROXY_SSL_HEADER", "").strip()
if _proxy_ssl_header:
    _header, _, _value = _proxy_ssl_header.partition("=")
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _header.strip().upper().replace("-", "_"), _value.strip() or "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Reverse proxies in front of the app that append the client's address to X-Forwarded-For. Login
# lockout and API throttling count per client address: with 0 they use the connection's address
# and ignore the header, which a client could otherwise forge to dodge its limit.
NUM_PROXIES = env_int("NUM_PROXIES", 0, minimum=0)

# --- Metrics (README "Operations: metrics") ---
# /metrics answers the direct peers in METRICS_ALLOWED_IPS (addresses or networks, the connection's
# address, never X-Forwarded-For: a proxied request is not a direct peer) and requests with
# "Authorization: Bearer <METRICS_BEARER_TOKEN>";
# everyone else gets 403. An empty list and no token close it altogether.
METRICS_BEARER_TOKEN = env_str("METRICS_BEARER_TOKEN", "")
try:
    METRICS_ALLOWED_IPS = [
        ipaddress.ip_network(entry, strict=False) for entry in env_list("METRICS_ALLOWED_IPS", ["127.0.0.1", "::1"])
    ]
except ValueError as exc:
    raise ImproperlyConfigured(f"METRICS_ALLOWED_IPS must be addresses or networks (10.0.0.0/8): {exc}") from None

# --- Booking policy knobs (read by reservations.policy) ---
SLOT_HOURS = env_int("SLOT_HOURS", 2, minimum=1)
# The slot in minutes; SLOT_MINUTES overrides SLOT_HOURS for short slots (demos, end-to-end tests).
SLOT_MINUTES = env_int("SLOT_MINUTES", SLOT_HOURS * 60, minimum=1)
if (24 * 60) % SLOT_MINUTES:
    raise ImproperlyConfigured(f"The slot ({SLOT_MINUTES} minutes) must divide a day")
BOOKING_HORIZON_DAYS = env_int("BOOKING_HORIZON_DAYS", 28, minimum=1)
# Preemption (reservations.policy): how far ahead a victim is warned, and how long a job that has
# just started runs before it may be preempted (against start-stop thrashing). Fractions allowed.
PREEMPTION_NOTICE_MINUTES = env_float("PREEMPTION_NOTICE_MINUTES", 30, minimum=0)
PREEMPT_MIN_RUNTIME_MINUTES = env_float("PREEMPT_MIN_RUNTIME_MINUTES", 15, minimum=0)
# Fair sharing (reservations.policy, README "Fair sharing"): when a quota week starts, as a weekday
# and a UTC time ("Mon 00:00", "sun 18:00"), and how many days of use the waitlist's fair-share order
# looks back on.
QUOTA_WEEK_START = env_str("QUOTA_WEEK_START", "Mon 00:00")
_week_start = re.fullmatch(r"(mon|tue|wed|thu|fri|sat|sun)[a-z]*\s+([01]?\d|2[0-3]):([0-5]\d)", QUOTA_WEEK_START.strip().lower())
if _week_start is None:
    raise ImproperlyConfigured(f"QUOTA_WEEK_START must be a weekday and a UTC time, like 'Mon 00:00'; got {QUOTA_WEEK_START!r}")
# Minutes from Monday 00:00 UTC to the start of a quota week.
QUOTA_WEEK_OFFSET_MINUTES = (
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"].index(_week_start[1]) * 24 * 60
    + int(_week_start[2]) * 60 + int(_week_start[3])
)
FAIR_SHARE_DAYS = env_int("FAIR_SHARE_DAYS", 7, minimum=1)
# Recurring bookings (reservations.recurrence): the most occurrences one series may have.
SERIES_MAX_OCCURRENCES = env_int("SERIES_MAX_OCCURRENCES", 366, minimum=1)
# Idempotency records older than this are pruned; a retry after it books again.
IDEMPOTENCY_TTL_HOURS = env_int("IDEMPOTENCY_TTL_HOURS", 24, minimum=1)
# Years of history (README "The audit log over the years"): beat keeps the audit log's monthly
# partitions made this many months ahead (PostgreSQL), and deletes read notices older than
# NOTICE_RETENTION_DAYS (0: keep them all). The audit log itself is never pruned.
AUDIT_PARTITION_MONTHS_AHEAD = env_int("AUDIT_PARTITION_MONTHS_AHEAD", 3, minimum=1)
NOTICE_RETENTION_DAYS = env_int("NOTICE_RETENTION_DAYS", 365, minimum=0)
# Largest JSON body the API reads (413 beyond): its parser reads the stream, so DATA_UPLOAD_MAX_MEMORY_SIZE
# (Django's HTML 400) never applies.
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 64 * 1024, minimum=1024)
# Training: where datasets and .pt models may be read from, and where runs are written.
TRAINING_DATA_ROOTS = [Path(p).resolve() for p in env_list("TRAINING_DATA_ROOTS", [str(VAR_DIR / "datasets")])]
MODEL_ROOTS = [Path(p).resolve() for p in env_list("MODEL_ROOTS", [str(VAR_DIR / "models")])]
TRAINING_RUNS_DIR = Path(env_str("TRAINING_RUNS_DIR", str(VAR_DIR / "runs"))).resolve()
# Slot lifecycle: how long a stopping job gets to checkpoint before it is killed; how much past its
# booking a job may run while nobody else has the GPUs (Slurm's OverTimeLimit); when a silent node
# is lost; whether a booking whose first slot passes with no job is released.
STOP_GRACE_SECONDS = env_int("STOP_GRACE_SECONDS", 300, minimum=1)
OVERRUN_GRACE_PCT = env_int("OVERRUN_GRACE_PCT", 10, minimum=0)
HEARTBEAT_SECONDS = env_int("HEARTBEAT_SECONDS", 5, minimum=1)
NODE_LOST_SECONDS = env_int("NODE_LOST_SECONDS", 45, minimum=2)
NO_SHOW_RELEASE = env_bool("NO_SHOW_RELEASE", False)
# Devices a node without NVIDIA GPUs offers, so the whole flow runs on CPU.
CPU_DEVICE_COUNT = env_int("CPU_DEVICE_COUNT", 2, minimum=1)
# "auto": NVIDIA GPUs when NVML finds some, else CPU devices; "cpu": CPU devices even on a GPU machine
# (the tests' node workers, whose checks expect CPU devices wherever they run).
# "double:<json file>": a device double whose devices and readings come from that file (tests of the
# GPU health alerts with real node workers; rehearsing the alerts).
NODE_DEVICES = env_str("NODE_DEVICES", "auto")
if NODE_DEVICES not in ("auto", "cpu") and not (NODE_DEVICES.startswith("double:") and len(NODE_DEVICES) > 7):
    raise ImproperlyConfigured(f"NODE_DEVICES must be auto, cpu or double:<json file>, got {NODE_DEVICES!r}")
# GPU telemetry and health (README "Operations: GPU health and alerts"): each node worker serves its
# GPUs' readings for Prometheus on NODE_METRICS_PORT (0: off) and sends them with its heartbeat. A
# reading at or over an alert threshold opens an alert episode (one notice per episode); a new ECC or
# XID error, a temperature at or over GPU_TEMP_FAIL_CELSIUS, or a GPU the node cannot reach takes the
# GPU out of booking: heat and a lost GPU come back after GPU_RECOVERY_READINGS clean heartbeats in a
# row, ECC after its counter resets (a GPU reset) and then as many, XID only by the admin's "Return
# to service".
NODE_METRICS_PORT = env_int("NODE_METRICS_PORT", 9400, minimum=0)
# The address the node's exporter listens on: all interfaces by default, so a Prometheus on another
# machine can scrape it (as DCGM exporter does); firewall the port to the Prometheus host, or give
# 127.0.0.1 when Prometheus runs on the node.
NODE_METRICS_ADDR = env_str("NODE_METRICS_ADDR", "0.0.0.0")
GPU_TEMP_ALERT_CELSIUS = env_float("GPU_TEMP_ALERT_CELSIUS", 85.0, minimum=0)
GPU_TEMP_FAIL_CELSIUS = env_float("GPU_TEMP_FAIL_CELSIUS", 95.0, minimum=0)
GPU_MEMORY_ALERT_PCT = env_float("GPU_MEMORY_ALERT_PCT", 95.0, minimum=0)
GPU_RECOVERY_READINGS = env_int("GPU_RECOVERY_READINGS", 3, minimum=1)
# A temperature/memory episode ends only this far (degrees / percentage points) under its threshold.
GPU_ALERT_CLEAR_MARGIN = env_float("GPU_ALERT_CLEAR_MARGIN", 5.0, minimum=0)

# Serving (README "Serving models"). Registered weights are copied into MODEL_STORE as
# <sha256>.pt: shared storage (NFS, ...) in a deployment with several nodes, so every replica reads the
# same bytes. A replica listens on REPLICA_ADDR (the node's address others reach it at) and a port of
# REPLICA_PORTS; its models may take REPLICA_GPU_BUDGET_PCT of its GPU's memory (on a CPU device,
# REPLICA_CPU_BUDGET_MB), unless the booking gives memory_budget_mb. A replica that is drained
# (slot end, preemption) finishes its requests within REPLICA_DRAIN_SECONDS.
MODEL_STORE = Path(env_str("MODEL_STORE", str(VAR_DIR / "model-store"))).resolve()
REPLICA_ADDR = env_str("REPLICA_ADDR", "127.0.0.1")
_ports = env_str("REPLICA_PORTS", "9500-9599")
try:
    _low, _, _high = _ports.partition("-")
    REPLICA_PORTS = range(int(_low), int(_high or _low) + 1)
except ValueError:
    raise ImproperlyConfigured(f"REPLICA_PORTS must be a port or a range like 9500-9599, got {_ports!r}") from None
if not REPLICA_PORTS or REPLICA_PORTS.start < 1 or REPLICA_PORTS.stop > 65536:
    raise ImproperlyConfigured(f"REPLICA_PORTS must be ports between 1 and 65535, got {_ports!r}")
REPLICA_GPU_BUDGET_PCT = env_float("REPLICA_GPU_BUDGET_PCT", 80, minimum=1)
REPLICA_CPU_BUDGET_MB = env_int("REPLICA_CPU_BUDGET_MB", 2048, minimum=1)
REPLICA_DRAIN_SECONDS = env_int("REPLICA_DRAIN_SECONDS", 30, minimum=1)
# Seconds a replica's start may take (its process up and its preloaded models loaded) before it
# counts as failed.
REPLICA_START_SECONDS = env_int("REPLICA_START_SECONDS", 300, minimum=1)

# The inference front door (README "Serving models: one endpoint"): its own ASGI process
# (`uvicorn routing.asgi:app`) on ROUTER_HOST:ROUTER_PORT. Routing (routing.policy): warm replicas
# first, least in flight per unit of weight, spilling to the least loaded replica once every warm
# one has ROUTER_QUEUE_THRESHOLD requests in flight per unit of weight; ROUTER_MAX_FAILS failures
# within ROUTER_FAIL_WINDOW_SECONDS take a replica out for ROUTER_FAIL_TIMEOUT_SECONDS; each replica
# is checked every ROUTER_HEALTH_SECONDS; a replica stops getting requests ROUTER_END_MARGIN_SECONDS
# before its booking ends, and at once when its node has not heartbeat for
# ROUTER_HEARTBEAT_GRACE_SECONDS. Each team may send ROUTER_TEAM_RATE requests; each front door holds
# at most ROUTER_MAX_QUEUE requests waiting for a replica (more: 429 with Retry-After).
ROUTER_HOST = env_str("ROUTER_HOST", "127.0.0.1")
ROUTER_PORT = env_int("ROUTER_PORT", 8100, minimum=1)
ROUTER_QUEUE_THRESHOLD = env_float("ROUTER_QUEUE_THRESHOLD", 4, minimum=0.1)
ROUTER_MAX_FAILS = env_int("ROUTER_MAX_FAILS", 3, minimum=1)
ROUTER_FAIL_WINDOW_SECONDS = env_float("ROUTER_FAIL_WINDOW_SECONDS", 10, minimum=0.1)
ROUTER_FAIL_TIMEOUT_SECONDS = env_float("ROUTER_FAIL_TIMEOUT_SECONDS", 10, minimum=0.1)
ROUTER_HEALTH_SECONDS = env_float("ROUTER_HEALTH_SECONDS", 2, minimum=0.1)
ROUTER_END_MARGIN_SECONDS = env_float("ROUTER_END_MARGIN_SECONDS", 5, minimum=0)
ROUTER_HEARTBEAT_GRACE_SECONDS = env_float("ROUTER_HEARTBEAT_GRACE_SECONDS", 3 * HEARTBEAT_SECONDS, minimum=1)
ROUTER_TEAM_RATE = env_rate("ROUTER_TEAM_RATE", "100/second")
ROUTER_MAX_QUEUE = env_int("ROUTER_MAX_QUEUE", 256, minimum=1)
# Requests one team may hold in one front door at once (uploads included); seconds a caller has to
# send a request's headers (after connecting or its previous answer; then the connection is closed)
# and its body (then 408); seconds a replica has to answer a request sent to it (then 502, not resent).
ROUTER_TEAM_MAX_IN_FLIGHT = env_int("ROUTER_TEAM_MAX_IN_FLIGHT", 64, minimum=1)
ROUTER_HEADER_SECONDS = env_float("ROUTER_HEADER_SECONDS", 10, minimum=0.1)
ROUTER_BODY_SECONDS = env_float("ROUTER_BODY_SECONDS", 30, minimum=0.1)
ROUTER_REQUEST_TIMEOUT_SECONDS = env_float("ROUTER_REQUEST_TIMEOUT_SECONDS", 60, minimum=0.1)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "axes",
    "csp",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "reservations",
    "trainer",
    "serving",
    "routing",
    "web",
    "ops",
]

MIDDLEWARE = [
    # First, so a request's measured time includes all the other middleware.
    "ops.middleware.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Pages show times in the viewer's zone (its cookie); everything is stored in UTC.
    "web.middleware.ViewerTimeZoneMiddleware",
    # Last, as django-axes requires: it turns a login refused for lockout into the lockout response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "scheduler.urls"
WSGI_APPLICATION = "scheduler.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "web.context_processors.notices",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'scheduler.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60, minimum=0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite has no row locks: IMMEDIATE takes the write lock at BEGIN, so the check-then-insert
    # of a booking cannot interleave with another writer. WAL lets readers run meanwhile.
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # The tests' SQLite lane uses a file, as the quick start does: an in-memory database shares one
    # cache between connections, with table locks instead of the busy timeout, so concurrent
    # bookings would meet "table is locked" where the quick start's file waits its turn.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
# Stored and computed in UTC everywhere; TIME_ZONE only changes what the admin and pages display.
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True

# The site's sign-in page (web): LDAP accounts when LDAP_SERVER_URI is set, local accounts always.
LOGIN_URL = "web:login"
LOGIN_REDIRECT_URL = "web:calendar"
LOGOUT_REDIRECT_URL = "web:login"

# --- Cache: API throttling counters ---
# Per process by default (one web process in the quick start). Under gunicorn each worker would
# keep its own counters and multiply every rate by the worker count: production sets CACHE_URL.
CACHE_URL = env_str("CACHE_URL", "")
if CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}}
elif CACHE_URL in ("", "locmem://"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
else:
    raise ImproperlyConfigured(f"CACHE_URL must be redis://host:port/db or locmem://, got {CACHE_URL!r}")

# --- Failed logins (admin, the site's login page, the API's token endpoint): django-axes ---
# Attempts are kept in the database, so every web worker sees them. After LOGIN_FAILURE_LIMIT
# failures from one client address, or for one username from any addresses, logins from that
# address, or to that username, are refused (429) for LOGIN_LOCKOUT_MINUTES, counted again from each
# attempt made while locked. Both, so that neither one address trying many usernames nor many
# addresses trying one username (a botnet) gets more than the limit. The username is counted in
# lower case (scheduler.security.lockout_username): the directory matches uids in any case.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_USERNAME_CALLABLE = "scheduler.security.lockout_username"
AXES_CLIENT_IP_CALLABLE = "apibase.throttling.client_ip"
AXES_LOCKOUT_CALLABLE = "scheduler.security.lockout_response"

# --- Company sign-in: LDAP (django-auth-ldap), when LDAP_SERVER_URI is set ---
# web.ldap.DirectoryBackend signs people in against the directory (users by uid) and, at every
# sign-in, brings their staff flag, high-priority right and directory teams in line with their
# groups (reservations.services.user_directory_sync). It sits after axes' backend, so lockout still
# applies, and before ModelBackend, so local accounts (admin, demo users) keep working, also while
# the directory is down. Every DN is parsed here: a typo stops start-up instead of refusing everyone.


def _dn_within(dn, base):
    """Whether `dn` is `base` or lies below it, whatever the spelling of either."""
    rdns, base_rdns = ldap.dn.str2dn(dn.lower()), ldap.dn.str2dn(base.lower())
    return rdns[len(rdns) - len(base_rdns):] == base_rdns


def _env_dn(environ, name, *, required=False, under=None):
    raw = environ.get(name, "").strip()
    if not raw:
        if required:
            raise ImproperlyConfigured(f"{name} must be set when LDAP_SERVER_URI is set")
        return ""
    if not ldap.dn.is_dn(raw):
        raise ImproperlyConfigured(f"{name} must be an LDAP DN like cn=staff,ou=groups,dc=example,dc=com, got {raw!r}")
    if under is not None:
        base_name, base = under
        if not _dn_within(raw, base):
            raise ImproperlyConfigured(f"{name} ({raw}) must be under {base_name} ({base}), where groups are searched")
    return raw


def _group_search(group_base, team_base):
    """Where a person's groups are looked for: LDAP_GROUP_SEARCH_BASE, and LDAP_TEAM_GROUP_BASE as well
    when it lies elsewhere (many directories keep teams in a branch of their own, ou=teams beside
    ou=groups). One search when the teams are inside the group base, which finds them already."""
    bases = [group_base] + ([team_base] if team_base and not _dn_within(team_base, group_base) else [])
    searches = [LDAPSearch(base, ldap.SCOPE_SUBTREE, "(objectClass=groupOfNames)") for base in bases]
    return searches[0] if len(searches) == 1 else LDAPSearchUnion(*searches)


def ldap_settings(environ, backends):
    """django-auth-ldap's AUTH_LDAP_* settings, the group DNs web.ldap reads and `backends` with the
    directory's after axes', from the LDAP_* variables in `environ`; {} when LDAP_SERVER_URI is unset
    (local accounts only). The tests build their settings with it too."""
    uris = environ.get("LDAP_SERVER_URI", "").split()
    if not uris:
        return {}
    for uri in uris:
        if not uri.lower().startswith(("ldap://", "ldaps://")) or not ldapurl.isLDAPUrl(uri):
            raise ImproperlyConfigured(f"LDAP_SERVER_URI must be ldap://host[:port] or ldaps://host[:port] (several separated by spaces), got {uri!r}")
    raw_tls = environ.get("LDAP_START_TLS", "").strip().lower()
    if raw_tls not in ("", "1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ImproperlyConfigured(f"LDAP_START_TLS must be a boolean (1/0, true/false), got {raw_tls!r}")
    start_tls = raw_tls in ("1", "true", "yes", "on")
    if start_tls and any(uri.lower().startswith("ldaps://") for uri in uris):
        raise ImproperlyConfigured("LDAP_START_TLS is for ldap:// URIs; ldaps:// is TLS already")
    user_base = _env_dn(environ, "LDAP_USER_SEARCH_BASE", required=True)
    group_names = ("LDAP_STAFF_GROUP", "LDAP_HIGH_PRIORITY_GROUP", "LDAP_TEAM_GROUP_BASE")
    group_base = _env_dn(
        environ, "LDAP_GROUP_SEARCH_BASE", required=any(environ.get(name, "").strip() for name in group_names)
    )
    groups = {
        name: _env_dn(environ, name, under=("LDAP_GROUP_SEARCH_BASE", group_base))
        for name in ("LDAP_STAFF_GROUP", "LDAP_HIGH_PRIORITY_GROUP")
    }
    # The team base may lie anywhere: it is searched as well when it is outside the group base.
    groups["LDAP_TEAM_GROUP_BASE"] = _env_dn(environ, "LDAP_TEAM_GROUP_BASE")
    result = {
        "AUTH_LDAP_SERVER_URI": " ".join(uris),
        "AUTH_LDAP_BIND_DN": _env_dn(environ, "LDAP_BIND_DN"),
        "AUTH_LDAP_BIND_PASSWORD": environ.get("LDAP_BIND_PASSWORD", ""),
        "AUTH_LDAP_START_TLS": start_tls,
        "AUTH_LDAP_USER_SEARCH": LDAPSearch(user_base, ldap.SCOPE_SUBTREE, "(uid=%(user)s)"),
        "AUTH_LDAP_USER_ATTR_MAP": {"first_name": "givenName", "last_name": "sn", "email": "mail"},
        # A directory that does not answer within seconds counts as down: the login page says so
        # instead of hanging until the proxy gives up.
        "AUTH_LDAP_CONNECTION_OPTIONS": {ldap.OPT_NETWORK_TIMEOUT: 5, ldap.OPT_TIMEOUT: 10},
        **groups,
        "AUTHENTICATION_BACKENDS": [backends[0], "web.ldap.DirectoryBackend", *backends[1:]],
    }
    if group_base:
        result["AUTH_LDAP_GROUP_SEARCH"] = _group_search(group_base, groups["LDAP_TEAM_GROUP_BASE"])
        result["AUTH_LDAP_GROUP_TYPE"] = GroupOfNamesType()
    return result


# Module-level names, as Django reads settings.
globals().update(ldap_settings(os.environ, AUTHENTICATION_BACKENDS))

# --- Content Security Policy (django-csp) ---
# Scripts only from this site, or inline with the request's nonce (`{{ request.csp_nonce }}`; the
# header names a nonce only on pages that use one). The Swagger page loads its start-up script from
# its own URL (SpectacularSwaggerSplitView) for this. Styles allow inline: the admin and Swagger UI
# write style attributes, and a nonce would switch 'unsafe-inline' off in browsers.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, "'unsafe-inline'"],
        "img-src": [SELF, "data:"],
        "font-src": [SELF, "data:"],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "gpu-scheduler@localhost")
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_FILE_PATH = env_str("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1)
# Notices by e-mail: how often a failed send (the server refused it or did not answer) is retried,
# with exponential backoff, before the notice records that it gave up.
EMAIL_MAX_RETRIES = env_int("EMAIL_MAX_RETRIES", 8, minimum=0)
EMAIL_RETRY_BACKOFF_MAX_SECONDS = env_int("EMAIL_RETRY_BACKOFF_MAX_SECONDS", 600, minimum=1)
# Team webhooks (notices as JSON POSTs): per-attempt timeout, and how often a failure is retried
# (with exponential backoff) before the notice records the delivery as failed.
WEBHOOK_TIMEOUT_SECONDS = env_int("WEBHOOK_TIMEOUT_SECONDS", 5, minimum=1)
WEBHOOK_MAX_RETRIES = env_int("WEBHOOK_MAX_RETRIES", 8, minimum=0)
WEBHOOK_RETRY_BACKOFF_MAX_SECONDS = env_int("WEBHOOK_RETRY_BACKOFF_MAX_SECONDS", 600, minimum=1)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an anonymous request then gets 401 with WWW-Authenticate, not 403. Both
        # count what DRF's throttles cannot see, as they run after authentication and permissions:
        # failed tokens, and (last in the list) anonymous requests.
        "reservations.api.authentication.TokenAuthentication",
        "reservations.api.authentication.SessionAuthentication",
    ],
    # Signed-in use is not limited unless API_THROTTLE_USER says so (benchmarks and CI fire
    # hundreds of requests a second with valid tokens).
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "user": env_rate("API_THROTTLE_USER", None),
        "anon": env_rate("API_THROTTLE_ANON", "60/minute"),
        "failed_token": env_rate("API_THROTTLE_FAILED_TOKEN", "10/minute"),
    },
    "NUM_PROXIES": NUM_PROXIES,
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": ["reservations.api.parsers.BoundedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
    "DEFAULT_PAGINATION_CLASS": "reservations.api.pagination.Pagination",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "reservations.api.errors.exception_handler",
    "DATETIME_FORMAT": "iso-8601",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "GPU slot scheduler API",
    "DESCRIPTION": "Book GPUs in fixed slots, with priorities, preemption and training jobs.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # No validator badge: it would send the schema's URL to validator.swagger.io (and CSP blocks it).
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
}

# --- Celery ---
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _queue_dir = VAR_DIR / "celery" / "queue"
    _processed_dir = VAR_DIR / "celery" / "processed"
    # kombu keeps its exchange bindings (the workers' pidbox too) in `control_folder`, by default
    # "control" under the working directory, which is the repository root under honcho.
    _control_dir = VAR_DIR / "celery" / "control"
    for _dir in (_queue_dir, _processed_dir, _control_dir):
        _dir.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        "processed_folder": str(_processed_dir),
        "control_folder": str(_control_dir),
        "store_processed": False,
    }
else:
    # A task not acked within the visibility timeout is delivered again: it must exceed the
    # longest task, and every task is idempotent anyway.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_TASK_TRACK_STARTED = True
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 300, minimum=1)
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 240, minimum=1)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "reservations-tick": {
        "task": "reservations.tasks.tick",
        "schedule": timedelta(seconds=env_int("TICK_SECONDS", 30, minimum=1)),
    },
    "trainer-reconcile": {
        "task": "trainer.tasks.reconcile",
        "schedule": timedelta(seconds=env_int("RECONCILE_SECONDS", 10, minimum=1)),
    },
    # Daily at a time of day: a one-day interval counts from beat's start where beat keeps no
    # schedule file (a container), so a beat restarted more often than daily would never run it.
    "reservations-audit-partitions": {"task": "reservations.tasks.audit_partitions", "schedule": crontab(minute=10, hour=3)},
    "reservations-notices-prune": {"task": "reservations.tasks.notices_prune", "schedule": crontab(minute=40, hour=3)},
    # Recurring bookings: occurrences that came within the booking horizon are booked (hourly, so a
    # beat down for a while catches up the same night; booking an occurrence twice is impossible).
    "reservations-series-extend": {"task": "reservations.tasks.series_extend", "schedule": crontab(minute=20)},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
