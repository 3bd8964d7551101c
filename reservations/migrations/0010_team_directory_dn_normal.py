"""Teams' directory groups in the one spelling Team.save() now stores (reservations.directory_names),
so that a DN an admin typed with other spacing matches the directory's. Written out here rather than
imported: a migration must keep doing what it did when the module changes."""

import ldap
import ldap.dn
from django.db import migrations


def normalise(apps, schema_editor):
    Team = apps.get_model("reservations", "Team")
    for team in Team.objects.exclude(directory_dn=""):
        try:
            normal = ldap.dn.dn2str(ldap.dn.str2dn(team.directory_dn)).lower()
        except ldap.DECODING_ERROR:
            continue  # no DN: it never matched a group; the admin form asks for a real one at the next edit
        # Two spellings of one group on two teams: leave the second for an admin to sort out.
        if normal != team.directory_dn and not Team.objects.filter(directory_dn__iexact=normal).exclude(pk=team.pk).exists():
            Team.objects.filter(pk=team.pk).update(directory_dn=normal)


class Migration(migrations.Migration):
    dependencies = [("reservations", "0009_team_directory_dn")]

    operations = [migrations.RunPython(normalise, migrations.RunPython.noop)]
