"""What each per-request layer costs: `GET /api/v1/me/` (token authentication, one query) in this
process through Django's test client, with every layer, without each of the security layers in
turn, and without all of them. No server, no network: only the Python a request runs.

    .venv/bin/python bench/request_layers.py [--requests 3000] [--rounds 3]

Needs PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres); recreates the database
`gpu_bench_layers`. Prints the best and median milliseconds per request of each variant over the
rounds (variants interleaved round by round, so a slower moment hits them all alike).
"""

import argparse
import os
import statistics
import time

from benchlib import REPO, django_setup, in_process_env, machine, migrate, recreate_database

DB = "gpu_bench_layers"
AXES = "axes.middleware.AxesMiddleware"
CSP = "csp.middleware.CSPMiddleware"
PLAIN_AUTH = [
    "rest_framework.authentication.TokenAuthentication",
    "rest_framework.authentication.SessionAuthentication",
]


def variants(settings):
    every = list(settings.MIDDLEWARE)
    auth = list(settings.REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"])
    return {
        "every layer": (every, auth),
        "without axes middleware": ([m for m in every if m != AXES], auth),
        "without CSP middleware": ([m for m in every if m != CSP], auth),
        "without throttled auth": (every, PLAIN_AUTH),
        "without the three": ([m for m in every if m not in (AXES, CSP)], PLAIN_AUTH),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="requests per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    env = in_process_env(DB)
    version = recreate_database(DB)
    migrate(env={**os.environ, **env})
    django_setup(env)

    # Django's modules only once it is set up for this database.
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.test.utils import override_settings
    from rest_framework.authtoken.models import Token
    from rest_framework.settings import api_settings

    user = get_user_model().objects.create_user("bench")
    client = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    timings = {name: [] for name in variants(settings)}
    for _ in range(args.rounds):
        for name, (middleware, authentication) in variants(settings).items():
            rest = {**settings.REST_FRAMEWORK, "DEFAULT_AUTHENTICATION_CLASSES": authentication}
            with override_settings(MIDDLEWARE=middleware, REST_FRAMEWORK=rest):
                api_settings.reload()
                for _ in range(200):  # warm up: connections, caches, imports
                    client.get("/api/v1/me/")
                started = time.perf_counter()
                for _ in range(args.requests):
                    assert client.get("/api/v1/me/").status_code == 200
                timings[name].append((time.perf_counter() - started) / args.requests * 1000)
        api_settings.reload()

    print(f"machine  : {machine()}; PostgreSQL {version}; {REPO.name}")
    print(f"load     : {args.requests} x GET /api/v1/me/ per variant and round, {args.rounds} rounds, in process")
    print(f"{'variant':26} {'best ms':>8} {'median ms':>10}")
    for name, values in timings.items():
        print(f"{name:26} {min(values):8.3f} {statistics.median(values):10.3f}")


if __name__ == "__main__":
    main()
