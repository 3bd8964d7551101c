from django.apps import AppConfig


class OpsConfig(AppConfig):
    """Operations: the /metrics endpoint and the collectors that read the database for it."""

    name = "ops"
    verbose_name = "Operations"
