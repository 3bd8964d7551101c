"""Messages to a node's worker, sent by task name (services never import tasks). They only wake the
node's agent, which decides from the database, so a duplicate, late or lost message is harmless."""

from reservations.queue import send

START_JOB = "trainer.tasks.start_job"
STOP_JOB = "trainer.tasks.stop_job"


def node_queue(hostname):
    return f"node.{hostname}"


def send_start(job_id, hostname, eta):
    send(START_JOB, job_id, queue=node_queue(hostname), eta=eta)


def send_stop(job_id, hostname, reason):
    send(STOP_JOB, job_id, reason, queue=node_queue(hostname))
