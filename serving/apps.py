from django.apps import AppConfig

from trainer.signals import job_finished, nodes_lost
from trainer.supervisors import node_supervisors


class ServingConfig(AppConfig):
    name = "serving"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Imported here, as Django asks: each of these loads models (reservations.jobs through its
        # rules), which cannot be imported before the app registry is ready. No cycle is dodged.
        from reservations.jobs import work_kinds

        from .hooks import ServingWork
        from .receivers import register_completed_job, replicas_of_lost_nodes
        from .supervisor import ReplicaSupervisor

        # A booking may carry models to serve (its field `serve`), which the node agents start
        # replicas for on the booked devices.
        work_kinds.register(ServingWork())
        node_supervisors.register(ReplicaSupervisor)

        job_finished.connect(register_completed_job, dispatch_uid="serving.register_completed_job")
        nodes_lost.connect(replicas_of_lost_nodes, dispatch_uid="serving.replicas_of_lost_nodes")
