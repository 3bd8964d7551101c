"""What the company directory says about a person, applied at their sign-in: the staff flag, the
right to book high priority, and membership of the directory's teams.

The directory is the authority only for what it manages: a flag whose group is not configured is
left as it is (None), and only teams whose `directory_dn` lies under the directory's team base
(LDAP_TEAM_GROUP_BASE) gain and lose members here. Teams and memberships made by hand in the admin
(or linked to a group elsewhere in the directory) are never touched, and a hand-made team whose slug a
directory group would take is left alone too (an admin hands it over by setting its directory
group). Every change is in the audit log, by the scheduler (no actor), so admins see who gained or
lost what and why.
"""

import logging
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import IntegrityError, transaction

from ..directory_names import is_under, normal_dn, parse_dn
from ..models import AuditEntry, Membership, Team
from .audit import audit_record
from .locks import service_transaction

logger = logging.getLogger(__name__)

HIGH_PRIORITY_PERMISSION = ("reservations", "book_high_priority")


@dataclass(frozen=True)
class DirectoryTeam:
    """A team group of the directory: its DN (the team's identity), the slug and name a new team gets."""

    dn: str
    slug: str
    name: str


def user_directory_sync(*, user, teams, staff, high_priority, team_base=""):
    """Bring `user` in line with their directory groups: `staff` and `high_priority` (True/False,
    or None when the directory does not manage it) and `teams` (the DirectoryTeams they are in, all
    under `team_base`, or None when the directory manages no teams). Only memberships of teams
    whose group is under `team_base` are managed: a team linked to a group elsewhere would
    otherwise lose its members at every sign-in and never gain any. Returns the user with the flags
    as stored.

    The user's row is locked for the whole sync, so that two sign-ins of one person at once apply
    one after the other. It is not in locks.py's order, and this transaction takes no other lock
    than team rows it creates, so it cannot deadlock with bookings.
    """
    with service_transaction():
        locked = get_user_model().objects.select_for_update().get(pk=user.pk)
        reason = f"Company directory groups of {locked.get_username()} at sign-in."
        if staff is not None and locked.is_staff != staff:
            locked.is_staff = staff
            locked.save(update_fields=["is_staff"])
            _audit_user(locked, "is_staff", not staff, staff, reason)
        if high_priority is not None:
            _sync_permission(locked, high_priority, reason)
        if teams is not None:
            if not team_base:
                raise ValueError("user_directory_sync needs the team_base the teams come from")
            _sync_teams(locked, teams, normal_dn(team_base), reason)
    user.is_staff = locked.is_staff
    # Permissions are cached on the instance that authenticated: drop what it may have read before.
    for cache in ("_perm_cache", "_user_perm_cache", "_group_perm_cache"):
        user.__dict__.pop(cache, None)
    return user


def _audit_user(user, field, before, after, reason):
    audit_record(
        action=AuditEntry.Action.UPDATE, target=f"user:{user.pk}", reason=reason,
        before={"user": user.get_username(), field: before}, after={"user": user.get_username(), field: after},
    )


def _sync_permission(user, wanted, reason):
    app_label, codename = HIGH_PRIORITY_PERMISSION
    permission = Permission.objects.get(content_type__app_label=app_label, codename=codename)
    held = user.user_permissions.filter(pk=permission.pk).exists()
    if held == wanted:
        return
    if wanted:
        user.user_permissions.add(permission)
    else:
        user.user_permissions.remove(permission)
    _audit_user(user, codename, held, wanted, reason)


def _managed(team, base):
    return parse_dn(team.directory_dn) is not None and is_under(normal_dn(team.directory_dn), base)


def _sync_teams(user, teams, base, reason):
    wanted = {}
    for group in teams:
        team = _directory_team(group, reason)
        if team is not None and _managed(team, base):
            wanted[team.pk] = team
    held = [
        membership
        for membership in Membership.objects.select_related("team").filter(user=user).exclude(team__directory_dn="")
        if _managed(membership.team, base)
    ]
    for membership in held:
        if membership.team_id not in wanted:
            before = _membership_state(membership)
            pk = membership.pk
            membership.delete()
            audit_record(action=AuditEntry.Action.DELETE, target=f"membership:{pk}", reason=reason, before=before)
    have = {membership.team_id for membership in held if membership.team_id in wanted}
    for team_id, team in sorted(wanted.items()):
        if team_id in have:
            continue
        membership = Membership.objects.create(team=team, user=user, role=Membership.Role.MEMBER)
        audit_record(
            action=AuditEntry.Action.CREATE, target=f"membership:{membership.pk}", reason=reason,
            after=_membership_state(membership),
        )


def _membership_state(membership):
    return {"user": membership.user.get_username(), "team": membership.team.slug, "role": membership.role}


def _directory_team(group, reason):
    """The team of a directory group: the one with its DN, else a new one (first sight)."""
    dn = normal_dn(group.dn)
    team = Team.objects.filter(directory_dn__iexact=dn).first()
    if team is not None:
        return team
    if Team.objects.filter(slug=group.slug).exists():
        logger.warning(
            "Directory group %s is not synced: team %r exists already, by hand or from another group "
            "(to hand a hand-made team over, set its directory group in the admin)",
            group.dn, group.slug,
        )
        return None
    name = group.name if not Team.objects.filter(name=group.name).exists() else f"{group.name} ({group.slug})"
    try:
        # A savepoint: another person's sign-in may create the same team at this moment.
        with transaction.atomic():
            team = Team.objects.create(name=name[:100], slug=group.slug, directory_dn=dn)
    except IntegrityError:
        return Team.objects.filter(directory_dn__iexact=dn).first()
    audit_record(
        action=AuditEntry.Action.CREATE, target=f"team:{team.pk}", reason=reason,
        after={"name": team.name, "slug": team.slug, "directory_dn": team.directory_dn},
    )
    return team
