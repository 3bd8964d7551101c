from django.apps import AppConfig


class TrainerConfig(AppConfig):
    name = "trainer"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported here, as Django asks: both load models (reservations.jobs through its rules),
        # which cannot be imported before the app registry is ready. No cycle is dodged.
        from reservations.jobs import work_kinds

        from .hooks import TrainingWork

        # A booking may carry a training job (its field `job`).
        work_kinds.register(TrainingWork())
