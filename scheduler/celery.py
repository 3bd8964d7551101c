import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "scheduler.settings")

app = Celery("scheduler")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_ready.connect
def start_node_agent(sender, **kwargs):
    """A worker started with NODE_AGENT_HOSTNAME is that GPU node's worker: it registers the node's
    devices and runs the agent that starts and stops training there (trainer.agent)."""
    hostname = os.environ.get("NODE_AGENT_HOSTNAME")
    if hostname:
        from trainer.agent import start_agent
        from trainer.hardware import detect

        start_agent(hostname, detect())


@signals.worker_shutting_down.connect
def stop_node_agent(sender, **kwargs):
    from trainer import agent

    if agent.AGENT is not None:
        agent.AGENT.shutdown()
