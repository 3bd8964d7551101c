"""The front door's ASGI application: `uvicorn routing.asgi:app` (or `python -m routing`, which
reads ROUTER_HOST and ROUTER_PORT from the settings). Django is set up first: the front door shares
the settings, the database and the models with the web."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler.settings")
django.setup()

from .app import build_app  # noqa: E402 (needs Django set up)

app = build_app()
