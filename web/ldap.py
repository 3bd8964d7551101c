"""Company sign-in: django-auth-ldap, plus what the directory's groups mean here.

settings.ldap_settings puts DirectoryBackend between axes' backend and ModelBackend when
LDAP_SERVER_URI is set. After django-auth-ldap has checked the password (it opens no transaction),
the backend reads the person's groups and hands them to reservations.services.user_directory_sync,
which runs in a transaction of its own: staff flag, high-priority right and teams follow the
directory at every sign-in.

A directory that does not answer must not read as a wrong password: django-auth-ldap sends
`ldap_error` and refuses the sign-in, and the receiver below notes on the request why
(`request.directory_error`, a sentence for people), which the login form and the API's token
endpoint show when no other backend (a local account) signed the person in.
"""

import logging

import ldap
import ldap.dn
from django.conf import settings
from django.dispatch import receiver
from django.utils.text import slugify
from django_auth_ldap.backend import LDAPBackend, ldap_error

from reservations.directory_names import is_under, normal_dn, parse_dn
from reservations.services import DirectoryTeam, user_directory_sync

logger = logging.getLogger(__name__)

DIRECTORY_DOWN = (
    "The company directory is not answering, so company accounts cannot sign in right now. "
    "Please try again in a few minutes; local accounts still work."
)
DIRECTORY_FAILED = (
    "The company directory could not check this account (it answered with an error). "
    "Please try again later, or tell an administrator if it keeps happening."
)
# Errors that mean "nobody answered" rather than "the directory said no".
_UNREACHABLE = (ldap.SERVER_DOWN, ldap.TIMEOUT, ldap.CONNECT_ERROR)


@receiver(ldap_error)
def note_directory_error(sender, context, user, request, exception, **kwargs):
    if request is None:
        return
    request.directory_error = DIRECTORY_DOWN if isinstance(exception, _UNREACHABLE) else DIRECTORY_FAILED


def _team_of(dn):
    """The DirectoryTeam of a team group: its cn, as the directory spells it, is the name and gives the slug."""
    attribute, value, _ = ldap.dn.str2dn(dn)[0][0]
    slug = slugify(value)[:50]
    if attribute.lower() != "cn" or not slug:
        logger.warning("Directory group %s is under LDAP_TEAM_GROUP_BASE but has no cn a team slug can come from", dn)
        return None
    return DirectoryTeam(dn=normal_dn(dn), slug=slug, name=value)


class DirectoryBackend(LDAPBackend):
    """django-auth-ldap's backend (AUTH_LDAP_* settings, read per instance, so per sign-in), which
    also applies the person's groups."""

    def get_or_build_user(self, username, ldap_user):
        """The account a directory sign-in opens: one this backend made (it never has a usable
        password: the directory checks it), or a new one. django-auth-ldap's own matches any account
        whose username differs only in case, so a directory uid `alice` would sign in as a local
        superuser `ALICE`: an account with a usable password is a local one and is refused, as a
        wrong password is (its own password still signs it in through ModelBackend). An admin hands
        a local account over to the directory by removing its password."""
        model = self.get_user_model()
        wanted = username.lower()
        same = list(model.objects.filter(**{f"{model.USERNAME_FIELD}__iexact": wanted}))
        if not same:
            return model(**{model.USERNAME_FIELD: wanted}), True
        exact = [user for user in same if user.get_username() == wanted]
        user = exact[0] if exact else same[0] if len(same) == 1 else None
        if user is None:
            logger.warning(
                "Directory sign-in of %r refused: %d accounts here have that name in other cases, and none is the directory's",
                username, len(same),
            )
            raise ldap_user.AuthenticationFailed("several local accounts of that name")
        if user.has_usable_password():
            logger.warning(
                "Directory sign-in of %r refused: the account %r here is a local one (it has a password); "
                "to let the directory sign it in, remove its password in the admin",
                username, user.get_username(),
            )
            raise ldap_user.AuthenticationFailed("a local account of that name exists")
        return user, False

    def authenticate(self, request, username=None, password=None, **kwargs):
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            return None
        staff_group = getattr(settings, "LDAP_STAFF_GROUP", "")
        high_group = getattr(settings, "LDAP_HIGH_PRIORITY_GROUP", "")
        team_base = getattr(settings, "LDAP_TEAM_GROUP_BASE", "")
        if not (staff_group or high_group or team_base):
            return user
        try:
            # A DN that does not parse names no group this site knows: skipped, not a 500.
            groups = {normal_dn(dn): dn for dn in user.ldap_user.group_dns if parse_dn(dn)}
        except ldap.LDAPError as exc:
            # Without the groups, rights and teams would be stale: refuse, as for any directory error.
            ldap_error.send(type(self), context="directory_groups", user=user, request=request, exception=exc)
            return None
        teams = None
        if team_base:
            base = normal_dn(team_base)
            under = sorted(dn for normal, dn in groups.items() if is_under(normal, base))
            teams = [team for team in map(_team_of, under) if team is not None]
        return user_directory_sync(
            user=user,
            teams=teams,
            staff=normal_dn(staff_group) in groups if staff_group else None,
            high_priority=normal_dn(high_group) in groups if high_group else None,
            team_base=team_base,
        )
