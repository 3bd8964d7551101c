from django.apps import AppConfig


class ServingConfig(AppConfig):
    name = "serving"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported here: receivers use models, which are not loaded before ready().
        from trainer.signals import job_finished, nodes_lost

        from .receivers import register_completed_job, replicas_of_lost_nodes

        job_finished.connect(register_completed_job, dispatch_uid="serving.register_completed_job")
        nodes_lost.connect(replicas_of_lost_nodes, dispatch_uid="serving.replicas_of_lost_nodes")
