from django.apps import AppConfig
from django.db.backends.signals import connection_created

from .sql import register_sqlite_functions


class ReservationsConfig(AppConfig):
    name = "reservations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        connection_created.connect(register_sqlite_functions, dispatch_uid="reservations.sqlite_functions")
