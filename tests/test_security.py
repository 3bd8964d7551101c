"""Brute force (sign-ins on the login page, the admin and the API; API credentials), sign-in input
no account can have, and the production settings (HTTPS, CSP)."""

import json
import os
import re
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import pytest
import time_machine
from axes.models import AccessAttempt
from csp.middleware import CSPMiddleware
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.http import HttpResponse
from django.test import Client, override_settings
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from apibase.throttling import FailedTokenThrottle
from reservations.api.authentication import AnonymousThrottle
from scheduler.settings import env_rate

ME_URL = "/api/v1/me/"
TOKEN_URL = "/api/v1/auth/token/"
# README's production block ("PostgreSQL and Redis"), with a real secret in place of its "...".
PRODUCTION_ENV = {
    "DATABASE_URL": "postgres://scheduler_app:app-password@db.example:5432/scheduler",
    "CELERY_BROKER_URL": "redis://redis.example:6379/0",
    "CACHE_URL": "redis://redis.example:6379/1",
    "SECRET_KEY": "k7Qw-3vXn9LrT2bYp8Hs_F4mJc6Zd1GeA0uNiVoKxWlqRtEyBh5",
    "ALLOWED_HOSTS": "scheduler.example",
    "DEBUG": "0",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    "NUM_PROXIES": "1",
    "SECURE_SSL_REDIRECT": "1",
    "SESSION_COOKIE_SECURE": "1",
    "CSRF_COOKIE_SECURE": "1",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "1",
    "SECURE_HSTS_PRELOAD": "1",
}


@pytest.fixture(autouse=True)
def fresh_counters():
    """Throttle counters live in the cache, which outlives a test's database transaction."""
    cache.clear()
    yield
    cache.clear()


def token_client(token, address="10.0.0.1"):
    client = APIClient(REMOTE_ADDR=address)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def assert_throttled(response):
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0


def run_manage(args, env):
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env=dict(os.environ, **env),
        capture_output=True, text=True, timeout=120,
    )


# --- Failed sign-ins (django-axes) ---

LOGIN_PAGE, ADMIN_PAGE = "/login/", "/admin/login/"
SIGN_INS = [LOGIN_PAGE, ADMIN_PAGE, TOKEN_URL]


def sign_in(where, username, password, address):
    """A sign-in on the login page, the admin's or the API's token endpoint, from `address`."""
    if where == TOKEN_URL:
        return APIClient(REMOTE_ADDR=address).post(where, {"username": username, "password": password}, format="json")
    return Client(REMOTE_ADDR=address).post(where, {"username": username, "password": password})


def test_an_address_is_locked_out_of_the_admin_after_too_many_failed_logins(client, staff):
    failures = [
        client.post("/admin/login/", {"username": "staff", "password": "wrong"}, REMOTE_ADDR="10.0.0.7")
        for _ in range(settings.AXES_FAILURE_LIMIT)
    ]
    right = client.post("/admin/login/", {"username": "staff", "password": "pw-staff"}, REMOTE_ADDR="10.0.0.7")

    assert [r.status_code for r in failures[:-1]] == [200] * (settings.AXES_FAILURE_LIMIT - 1)
    assert_throttled(failures[-1])
    assert_throttled(right)
    assert int(right["Retry-After"]) == settings.AXES_COOLOFF_TIME.total_seconds()
    assert b"too many login attempts" in right.content


def test_a_locked_out_address_does_not_lock_out_someone_else_elsewhere(client, staff, owner):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/admin/login/", {"username": "staff", "password": "wrong"}, REMOTE_ADDR="10.0.0.7")

    response = sign_in(LOGIN_PAGE, "owner", "pw-owner", "10.0.0.8")

    assert response.status_code == 302


@pytest.mark.parametrize("where", SIGN_INS)
def test_one_username_guessed_from_many_addresses_is_locked_out_even_with_the_right_password(staff, where):
    guesses = [sign_in(where, "staff", "wrong", f"198.51.100.{n}") for n in range(settings.AXES_FAILURE_LIMIT)]

    right = sign_in(where, "staff", "pw-staff", "203.0.113.9")

    assert [r.status_code for r in guesses[:-1]] == [200 if where != TOKEN_URL else 400] * (settings.AXES_FAILURE_LIMIT - 1)
    assert_throttled(right)
    assert "_auth_user_id" not in right.wsgi_request.session


def test_guesses_at_a_username_in_other_cases_count_toward_the_same_lockout(staff):
    for n in range(settings.AXES_FAILURE_LIMIT):
        sign_in(LOGIN_PAGE, "staff"[:n] + "staff"[n:].upper(), "wrong", f"198.51.100.{n}")  # STAFF, sTAFF, ...

    assert_throttled(sign_in(LOGIN_PAGE, "staff", "pw-staff", "203.0.113.9"))


def test_one_address_guessing_many_usernames_is_locked_out_even_for_a_right_password(staff):
    for n in range(settings.AXES_FAILURE_LIMIT):
        sign_in(LOGIN_PAGE, f"someone{n}", "wrong", "10.0.0.7")

    assert_throttled(sign_in(LOGIN_PAGE, "staff", "pw-staff", "10.0.0.7"))


def lock_out_staff():
    for n in range(settings.AXES_FAILURE_LIMIT):
        sign_in(LOGIN_PAGE, "staff", "wrong", f"198.51.100.{n}")
    assert_throttled(sign_in(LOGIN_PAGE, "staff", "pw-staff", "203.0.113.9"))


def test_a_lockout_ends_after_login_lockout_minutes(staff):
    lock_out_staff()

    with time_machine.travel(timezone.now() + settings.AXES_COOLOFF_TIME + timedelta(seconds=1)):
        response = sign_in(LOGIN_PAGE, "staff", "pw-staff", "203.0.113.9")

    assert response.status_code == 302


def test_an_administrator_unlocks_a_locked_out_username_with_axes_reset_username(staff):
    lock_out_staff()

    call_command("axes_reset_username", "staff", stdout=StringIO())

    assert sign_in(LOGIN_PAGE, "staff", "pw-staff", "203.0.113.9").status_code == 302


# --- A username longer than any account's ---

@pytest.mark.parametrize("where", [LOGIN_PAGE, ADMIN_PAGE])
def test_a_username_too_long_for_any_account_is_a_form_error_on_the_sign_in_pages(db, where):
    response = sign_in(where, "u" * 256, "whatever", "10.0.0.7")

    assert response.status_code == 200
    assert "Ensure this value has at most 150 characters (it has 256)." in response.content.decode()
    assert not AccessAttempt.objects.exists()


def test_a_username_too_long_for_any_account_is_a_400_naming_it_at_the_token_endpoint(db):
    response = sign_in(TOKEN_URL, "u" * 256, "whatever", "10.0.0.7")

    assert response.status_code == 400
    assert list(response.json()) == ["username"]
    assert not AccessAttempt.objects.exists()


# --- API throttling ---

def test_anonymous_api_requests_over_the_rate_get_429_with_retry_after(db):
    client = APIClient(REMOTE_ADDR="10.0.0.1")
    allowed = AnonymousThrottle("10.0.0.1").num_requests

    within = [client.get(ME_URL).status_code for _ in range(allowed)]

    assert within == [401] * allowed
    assert_throttled(client.get(ME_URL))


def test_repeated_bad_tokens_get_429_with_retry_after(db):
    client = token_client("0" * 40)
    allowed = FailedTokenThrottle("10.0.0.1").num_requests

    within = [client.get(ME_URL).status_code for _ in range(allowed)]

    assert within == [401] * allowed
    assert_throttled(client.get(ME_URL))


def test_a_valid_token_is_accepted_from_an_address_over_the_bad_token_rate(owner):
    """One bad actor behind a shared address (a NAT, a CI runner) locks nobody else there out."""
    good = Token.objects.create(user=owner).key
    for _ in range(FailedTokenThrottle("10.0.0.1").num_requests):
        token_client("0" * 40).get(ME_URL)
    assert_throttled(token_client("0" * 40).get(ME_URL))

    assert token_client(good).get(ME_URL).status_code == 200
    assert_throttled(token_client("1" * 40).get(ME_URL))  # a bad token from there still waits


def test_a_forged_forwarded_for_header_does_not_dodge_the_limit(db):
    """With no trusted proxy (NUM_PROXIES=0), the connection's address is the client."""
    client = token_client("0" * 40)
    for n in range(FailedTokenThrottle("10.0.0.1").num_requests):
        client.get(ME_URL, HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")

    assert_throttled(client.get(ME_URL, HTTP_X_FORWARDED_FOR="192.0.2.200"))


def test_behind_a_trusted_proxy_each_forwarded_client_is_counted_apart(db):
    proxy = token_client("0" * 40, address="10.9.9.9")
    with override_settings(REST_FRAMEWORK=dict(settings.REST_FRAMEWORK, NUM_PROXIES=1)):
        for _ in range(FailedTokenThrottle("10.0.0.1").num_requests):
            proxy.get(ME_URL, HTTP_X_FORWARDED_FOR="192.0.2.1")

        assert_throttled(proxy.get(ME_URL, HTTP_X_FORWARDED_FOR="192.0.2.1"))
        assert proxy.get(ME_URL, HTTP_X_FORWARDED_FOR="192.0.2.2").status_code == 401


def test_signed_in_api_use_is_not_throttled(owner):
    client = token_client(Token.objects.create(user=owner).key)

    statuses = {client.get(ME_URL).status_code for _ in range(300)}

    assert statuses == {200}


def test_a_throttle_rate_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("X_RATE", "5/hour")
    monkeypatch.setenv("X_OFF", "off")

    assert env_rate("X_RATE", "1/second") == "5/hour"
    assert env_rate("X_OFF", "1/second") is None
    assert env_rate("X_MISSING", "1/second") == "1/second"


def test_a_short_throttle_period_is_spelt_out_for_every_reader(monkeypatch):
    monkeypatch.setenv("X_RATE", "10/Min")

    assert env_rate("X_RATE", None) == "10/minute"


@pytest.mark.parametrize("raw", ["10/mouse", "10", "0/minute", "ten/minute"])
def test_a_bad_throttle_rate_stops_start_up(monkeypatch, raw):
    monkeypatch.setenv("X_RATE", raw)

    with pytest.raises(ImproperlyConfigured, match="X_RATE"):
        env_rate("X_RATE", None)


# --- Production settings ---

def production_block():
    readme = (settings.BASE_DIR / "README.md").read_text()
    section = readme.split("### PostgreSQL and Redis", 1)[1]
    return section.split("```sh", 1)[1].split("```", 1)[0]


def test_readme_production_block_sets_every_variable_the_deploy_check_needs():
    block = production_block()

    assert [name for name in PRODUCTION_ENV if not re.search(rf"\b{name}=", block)] == []


@pytest.mark.slow
def test_the_production_environment_passes_the_deploy_check_without_warnings():
    result = run_manage(["check", "--deploy", "--fail-level", "WARNING"], PRODUCTION_ENV)

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.mark.slow
def test_in_production_plain_http_is_redirected_and_https_from_the_proxy_gets_hsts():
    script = (
        "import json\n"
        "from django.test import Client\n"
        "client = Client(HTTP_HOST='scheduler.example')\n"
        "plain = client.get('/api/docs/')\n"
        "proxied = client.get('/api/docs/', HTTP_X_FORWARDED_PROTO='https')\n"
        "print(json.dumps([plain.status_code, plain['Location'], proxied.status_code,"
        " proxied['Strict-Transport-Security']]))\n"
    )
    # README's Redis host does not exist here; the two requests count in this process only.
    result = run_manage(["shell", "-c", script], dict(PRODUCTION_ENV, CACHE_URL="locmem://"))

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [
        301, "https://scheduler.example/api/docs/", 200, "max-age=31536000; includeSubDomains; preload",
    ]


def test_plain_http_is_served_when_no_https_setting_is_given(db):
    assert APIClient().get("/api/docs/").status_code == 200


def csp(response):
    return dict(
        (directive.split()[0], directive.split()[1:]) for directive in response["Content-Security-Policy"].split(";")
    )


def test_the_swagger_page_runs_no_inline_script_and_its_start_up_script_is_allowed(db):
    client = APIClient()

    page = client.get("/api/docs/")
    scripts = re.findall(r"<script([^>]*)>", page.content.decode())
    start_up = re.search(r'<script src="([^"]*\?[^"]*script[^"]*)"', page.content.decode()).group(1)
    script = client.get(start_up.replace("&amp;", "&"))

    assert page.status_code == 200
    assert csp(page)["script-src"] == ["'self'"]
    assert scripts and all("src=" in attributes for attributes in scripts)
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert b"SwaggerUIBundle" in script.content


def test_the_admin_is_served_under_the_content_security_policy(admin_client):
    response = admin_client.get("/admin/reservations/reservation/add/")

    assert response.status_code == 200
    assert csp(response)["script-src"] == ["'self'"]
    assert csp(response)["frame-ancestors"] == ["'none'"]
    assert not re.search(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", response.content.decode())


def test_a_page_that_writes_the_nonce_into_an_inline_script_gets_it_in_its_policy(rf):
    middleware = CSPMiddleware(lambda request: HttpResponse(f'<script nonce="{request.csp_nonce}">go()</script>'))
    request = rf.get("/")

    response = middleware(request)

    assert csp(response)["script-src"] == ["'self'", f"'nonce-{request.csp_nonce}'"]
