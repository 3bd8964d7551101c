"""Directory teams: a team's directory group is stored in one spelling (so an admin's DN with other
spacing or case still hands the team over), and the sync manages only teams whose group lies under
LDAP_TEAM_GROUP_BASE (a team linked to a group elsewhere keeps the members it was given by hand),
which may be a branch of its own beside the groups."""

import pytest
from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError

from reservations.models import Membership, Team

from ..support import make_user
from .ldap_server import PASSWORDS, SIBLING_TEAMS, TEAMS, directory, slapd, teams_beside_groups  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow

SPACED_VISION = "CN=Vision, OU=teams , ou=Groups,  dc=example,dc=com"


def sign_in(client, username):
    return client.post("/login/", {"username": username, "password": PASSWORDS[username]})


class TeamForm(forms.ModelForm):
    class Meta:
        model = Team
        fields = ["name", "slug", "colour", "directory_dn"]


def test_a_teams_directory_group_is_stored_in_one_spelling(db):
    team = Team.objects.create(name="Vision", slug="vision", directory_dn=SPACED_VISION)

    team.refresh_from_db()
    assert team.directory_dn == f"cn=vision,{TEAMS}"


def test_the_team_form_normalises_the_directory_group_and_names_the_field_when_it_is_no_dn(db):
    good = TeamForm({"name": "Vision", "slug": "vision", "colour": "#4e79a7", "directory_dn": SPACED_VISION})
    bad = TeamForm({"name": "NLP", "slug": "nlp", "colour": "#4e79a7", "directory_dn": "the vision group"})

    assert good.is_valid(), good.errors
    assert good.save().directory_dn == f"cn=vision,{TEAMS}"
    assert not bad.is_valid()
    assert "directory_dn" in bad.errors
    with pytest.raises(ValidationError):
        Team(name="X", slug="x", directory_dn="cn=").full_clean()


def test_a_hand_made_team_handed_over_with_another_spelling_of_the_dn_gains_its_members(client, directory):
    vision = Team.objects.create(name="Vision (by hand)", slug="vision")
    Team.objects.filter(pk=vision.pk).update(directory_dn=SPACED_VISION)  # as stored before normalising
    vision.directory_dn = SPACED_VISION
    vision.save()  # an admin's edit

    assert sign_in(client, "alice").status_code == 302

    assert list(vision.members.values_list("username", flat=True)) == ["alice"]
    assert Team.objects.filter(slug__startswith="vision").count() == 1


def test_a_team_linked_to_a_group_outside_the_team_base_keeps_its_members(client, directory):
    infra = Team.objects.create(
        name="Infrastructure", slug="infra", directory_dn="cn=infra,ou=elsewhere,dc=example,dc=com"
    )
    alice = make_user("alice")
    alice.set_unusable_password()
    alice.save()
    Membership.objects.create(team=infra, user=alice, role=Membership.Role.ADMIN)

    assert sign_in(client, "alice").status_code == 302

    assert Membership.objects.get(team=infra, user=alice).role == Membership.Role.ADMIN
    assert set(alice.teams.values_list("slug", flat=True)) == {"infra", "vision"}


def test_a_new_directory_team_whose_name_is_taken_gets_its_slug_appended(client, directory):
    Team.objects.create(name="vision", slug="computer-vision")

    assert sign_in(client, "bob").status_code == 302

    assert Team.objects.get(slug="vision").name == "vision (vision)"


def test_the_high_priority_group_leaves_a_right_given_through_a_django_group_alone(client, directory):
    leads = Group.objects.create(name="leads")
    leads.permissions.add(Permission.objects.get(codename="book_high_priority"))
    bob = make_user("bob")
    bob.set_unusable_password()
    bob.save()
    bob.groups.add(leads)

    assert sign_in(client, "bob").status_code == 302  # bob is not in the directory's high-priority group

    bob = get_user_model().objects.get(pk=bob.pk)
    assert bob.has_perm("reservations.book_high_priority")
    assert not bob.user_permissions.exists()


def test_a_team_from_a_branch_beside_the_groups_and_the_staff_group_both_apply_at_sign_in(client, teams_beside_groups):
    assert sign_in(client, "carol").status_code == 302

    carol = get_user_model().objects.get(username="carol")
    assert carol.is_staff  # cn=staff,ou=groups
    assert list(carol.teams.values_list("slug", flat=True)) == ["speech"]  # not nlp, in ou=groups' own teams
    assert Team.objects.get(slug="speech").directory_dn == f"cn=speech,{SIBLING_TEAMS}"


def test_a_team_from_a_branch_beside_the_groups_and_the_high_priority_group_both_apply(client, teams_beside_groups):
    assert sign_in(client, "alice").status_code == 302

    alice = get_user_model().objects.get(username="alice")
    assert alice.has_perm("reservations.book_high_priority")  # cn=high-priority,ou=groups
    assert list(alice.teams.values_list("slug", flat=True)) == ["robotics"]


def test_someone_taken_out_of_a_team_beside_the_groups_leaves_it_at_the_next_sign_in(client, teams_beside_groups):
    sign_in(client, "alice")
    client.logout()
    teams_beside_groups.set_members(f"cn=robotics,{SIBLING_TEAMS}", [])

    assert sign_in(client, "alice").status_code == 302

    assert not get_user_model().objects.get(username="alice").teams.exists()
