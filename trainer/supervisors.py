"""What else a node's agent runs on its booked devices beside training jobs: the apps above trainer
register a NodeSupervisor here (serving.apps: its replicas), so that trainer never imports them."""

from typing import Protocol


class NodeSupervisor(Protocol):
    """Something else a node runs on its booked devices, beside training jobs, driven from the agent's
    loop: built with the agent, started once the node is registered, reconciled every pass, shut down
    with the worker."""

    def __init__(self, agent): ...

    def start(self) -> None: ...

    def reconcile(self) -> None: ...

    def busy_gpu_ids(self) -> set[int]:
        """The devices it holds now: training waits for them."""

    def shutdown(self) -> None: ...


class NodeSupervisors(list):
    """The kinds of NodeSupervisor the apps registered (serving.apps: its replicas)."""

    def register(self, supervisor: type[NodeSupervisor]):
        if supervisor not in self:
            self.append(supervisor)


node_supervisors = NodeSupervisors()
