"""LDAP distinguished names, in the one spelling this project stores and compares.

The directory, the settings and an admin may write one group's DN differently
("cn=Vision, ou=teams,..." and "cn=vision,ou=teams,..."): every DN is reduced to normal_dn's form
before it is stored (Team.directory_dn) or compared (the sign-in's groups), so equal means the same.
"""

import ldap
import ldap.dn


def parse_dn(dn):
    """The DN's RDNs (python-ldap's form), or None when `dn` is not a DN with a value in every part."""
    try:
        rdns = ldap.dn.str2dn(dn)
    except (ldap.DECODING_ERROR, TypeError, ValueError):
        return None
    if not rdns or any(not attribute or not value for rdn in rdns for attribute, value, _ in rdn):
        return None
    return rdns


def normal_dn(dn):
    """One spelling per DN (no spaces between parts, lower case), so that the directory's, the
    settings' and the admin's can be compared. Raises ValueError for a string that is no DN."""
    rdns = parse_dn(dn)
    if rdns is None:
        raise ValueError(f"{dn!r} is not an LDAP DN")
    return ldap.dn.dn2str(rdns).lower()


def is_under(dn, base):
    """Whether `dn` lies below `base` (both normal_dn's form); a DN is not under itself."""
    rdns, base_rdns = ldap.dn.str2dn(dn), ldap.dn.str2dn(base)
    return len(rdns) > len(base_rdns) and rdns[len(rdns) - len(base_rdns):] == base_rdns
