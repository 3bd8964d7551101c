"""A real OpenLDAP server (slapd, through python-ldap's slapdtest) with a small company directory,
and fixtures that point the site's sign-in at it.

    from .ldap_server import PASSWORDS, directory, slapd  # noqa: F401  (pytest fixtures)

    def test_...(client, directory):
        client.post("/login/", {"username": "alice", "password": PASSWORDS["alice"]})

The directory (dc=example,dc=com):
- alice: in the high-priority group and team group "vision";
- bob: team "vision";
- carol: team "nlp" and the staff group;
- nobody: in no group.

Teams are in ou=teams under ou=groups. A second team branch, ou=teams beside ou=groups, holds
"robotics" (alice) and "speech" (carol): the site reads it with the `teams_beside_groups` fixture
(LDAP_TEAM_GROUP_BASE set to it), and otherwise never finds it.

`slapd` is one server for the whole run; `directory` (per test) puts its groups back as above,
starts it again if a test stopped it, and sets the LDAP settings as settings.ldap_settings builds
them from LDAP_* variables (`Directory.environ()`), so the backend is the one production runs.
Debian's slapd and ldap-utils must be installed (bin/test installs them).
"""

import contextlib
import tempfile

import pytest
import slapdtest

from scheduler.settings import ldap_settings

SUFFIX = "dc=example,dc=com"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
TEAMS = f"ou=teams,{GROUPS}"
SIBLING_TEAMS = f"ou=teams,{SUFFIX}"
STAFF_GROUP = f"cn=staff,{GROUPS}"
HIGH_PRIORITY_GROUP = f"cn=high-priority,{GROUPS}"
PASSWORDS = {name: f"{name}-directory-password" for name in ("alice", "bob", "carol", "nobody")}

# Group DN -> member uids, as every test starts.
MEMBERS = {
    STAFF_GROUP: ["carol"],
    HIGH_PRIORITY_GROUP: ["alice"],
    f"cn=vision,{TEAMS}": ["alice", "bob"],
    f"cn=nlp,{TEAMS}": ["carol"],
    f"cn=robotics,{SIBLING_TEAMS}": ["alice"],
    f"cn=speech,{SIBLING_TEAMS}": ["carol"],
}


def user_dn(uid):
    return f"uid={uid},{PEOPLE}"


def _entries():
    yield f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n"
    for ou, parent in (("people", SUFFIX), ("groups", SUFFIX), ("teams", GROUPS), ("teams", SUFFIX)):
        yield f"dn: ou={ou},{parent}\nobjectClass: organizationalUnit\nou: {ou}\n"
    for uid, password in PASSWORDS.items():
        yield (
            f"dn: {user_dn(uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid.title()} Example\n"
            f"givenName: {uid.title()}\nsn: Example\nmail: {uid}@example.com\nuserPassword: {password}\n"
        )
    for group, uids in MEMBERS.items():
        cn = group.split(",", 1)[0].removeprefix("cn=")
        yield f"dn: {group}\nobjectClass: groupOfNames\ncn: {cn}\n" + _member_lines(uids)


def _member_lines(uids):
    # groupOfNames needs a member: the directory's manager stays in every group, so a test can
    # take the last person out.
    return "".join(f"member: {dn}\n" for dn in [f"cn=Manager,{SUFFIX}", *map(user_dn, uids)])


class Slapd(slapdtest.SlapdObject):
    suffix = SUFFIX
    openldap_schema_files = ("core.ldif", "cosine.ldif", "inetorgperson.ldif")
    # Its run folder; slapdtest's default is the working directory (the repository).
    TMPDIR = tempfile.gettempdir()


class Directory:
    """The server, and the changes tests make to it."""

    def __init__(self):
        self.server = Slapd()

    @property
    def uri(self):
        return self.server.ldap_uri

    def start(self):
        self.server.start()
        self.server.ldapadd("\n".join(_entries()))

    def stop(self):
        self.server.stop()

    @property
    def running(self):
        return self.server._proc is not None

    @contextlib.contextmanager
    def down(self):
        """slapd stopped (its port closed, as for a crashed server), started again afterwards."""
        self.server.terminate()
        self.server.wait()
        try:
            yield
        finally:
            self.server.resume()

    def set_members(self, group, uids):
        self.server.ldapmodify(f"dn: {group}\nchangetype: modify\nreplace: member\n" + _member_lines(uids))

    def reset(self):
        if not self.running:
            self.server.resume()
        for group, uids in MEMBERS.items():
            self.set_members(group, uids)

    def environ(self, team_base=TEAMS):
        """The LDAP_* variables a deployment would set for this directory."""
        return {
            "LDAP_SERVER_URI": self.uri,
            "LDAP_BIND_DN": self.server.root_dn,
            "LDAP_BIND_PASSWORD": self.server.root_pw,
            "LDAP_USER_SEARCH_BASE": PEOPLE,
            "LDAP_GROUP_SEARCH_BASE": GROUPS,
            "LDAP_STAFF_GROUP": STAFF_GROUP,
            "LDAP_HIGH_PRIORITY_GROUP": HIGH_PRIORITY_GROUP,
            "LDAP_TEAM_GROUP_BASE": team_base,
        }


@pytest.fixture(scope="session")
def slapd():
    server = Directory()
    server.start()
    yield server
    server.stop()


def _sign_in_against(slapd, settings, environ):
    slapd.reset()
    local_backends = [path for path in settings.AUTHENTICATION_BACKENDS if path != "web.ldap.DirectoryBackend"]
    for name, value in ldap_settings(environ, local_backends).items():
        setattr(settings, name, value)
    return slapd


@pytest.fixture
def directory(slapd, settings, db):
    """The directory as described above, and the site signing in against it (and the database)."""
    return _sign_in_against(slapd, settings, slapd.environ())


@pytest.fixture
def teams_beside_groups(slapd, settings, db):
    """The same, with the site's teams in ou=teams beside ou=groups (LDAP_TEAM_GROUP_BASE outside
    LDAP_GROUP_SEARCH_BASE)."""
    return _sign_in_against(slapd, settings, slapd.environ(team_base=SIBLING_TEAMS))
