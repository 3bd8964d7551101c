"""Reads of the pages' own data (the booking reads are in reservations.selectors)."""

from dataclasses import dataclass

from django.db.models import Prefetch

from reservations.models import Membership, Node
from serving.models import ModelVersion, Replica, Serving

from .models import FEED_TOKEN, CalendarFeed


def calendar_feed_by_token(token):
    """The feed this secret opens, or None: an unknown token, a deactivated user, or a team feed
    whose holder has left the team (checked on every request, so leaving closes the feed at once).
    A string not shaped like a token is no feed, without a query."""
    if not isinstance(token, str) or not FEED_TOKEN.fullmatch(token):
        return None
    feed = CalendarFeed.objects.select_related("user", "team").filter(token=token).first()
    if feed is None or not feed.user.is_active:
        return None
    if feed.team_id is not None and not Membership.objects.filter(user_id=feed.user_id, team_id=feed.team_id).exists():
        return None
    return feed


# Replicas shown on a booking's page: the newest of each device first; a long-running booking whose
# replicas restarted often shows the last few only.
PAGE_REPLICAS = 12


def booking_serving(reservation):
    """The booking's serving with its replicas (newest first), or None when it serves nothing."""
    replicas = Replica.objects.select_related("node", "gpu__node").order_by("gpu_id", "-id")
    serving = Serving.objects.prefetch_related(Prefetch("replicas", queryset=replicas)).filter(reservation=reservation).first()
    if serving is not None:
        serving.shown_replicas = [_with_memory(r) for r in serving.replicas.all()[:PAGE_REPLICAS]]
    return serving


def _with_memory(replica):
    """Its resident models' bytes, in MiB and against its budget, for the page's meter."""
    used = sum(model.get("bytes") or 0 for model in replica.resident)
    replica.used_mib = round(used / (1 << 20), 1)
    replica.budget_mib = round(replica.memory_budget / (1 << 20), 1)
    return replica


def servable_models(user):
    """(value, label) choices of the models `user`'s teams may serve: each model by name (its
    latest version at the slot start), then each of its versions. A booking serves its own team's
    models (the service checks), so a name two of the user's teams use is one choice, labelled with
    both teams: it means the model of the team the booking is charged to."""
    versions = (
        ModelVersion.objects.filter(model__team__memberships__user=user)
        .select_related("model__team")
        .order_by("model__name", "-version", "model__team__slug")
        .distinct()
    )
    teams_of = {}  # choice value -> (its label before the teams, the teams), in the order shown
    for version in versions:
        name, team = version.model.name, version.model.team.slug
        # Newest first: a name's first row is its latest version.
        teams_of.setdefault(name, (f"{name} (latest: version {version.version})", set()))[1].add(team)
        teams_of.setdefault(f"{name}:{version.version}", (f"{name} version {version.version}", set()))[1].add(team)
    return [(value, f"{label} · {', '.join(sorted(teams))}") for value, (label, teams) in teams_of.items()]


@dataclass(frozen=True)
class NodeGPUs:
    """A node and its GPUs, as the calendar's tracks and the booking form's GPU list show them."""

    node: Node
    gpus: list

    @property
    def can_train(self):
        """A job booked now starts: the node's worker heartbeats (online) and a GPU is healthy.
        Offline nodes stay bookable; their jobs wait for the worker."""
        return self.node.online and any(gpu.healthy for gpu in self.gpus)

    @property
    def state(self):
        if self.can_train:
            return "online · can train now"
        if self.node.online:
            return "online · no healthy GPU"
        return "offline · bookable"


def nodes_with_gpus(gpus):
    """`gpus` (in the calendar's order, grouped by node) as NodeGPUs: the nodes that can train now
    first, then the other online ones, then the offline ones, each group by host name."""
    nodes = {}
    for gpu in gpus:
        nodes.setdefault(gpu.node_id, NodeGPUs(gpu.node, []))
        nodes[gpu.node_id].gpus.append(gpu)
    return sorted(nodes.values(), key=lambda group: (not group.can_train, not group.node.online, group.node.hostname))
