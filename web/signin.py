"""The sign-in form: Django's, except that a directory that did not answer is not a wrong password."""

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm


class SignInForm(AuthenticationForm):
    @property
    def directory_enabled(self):
        """Whether company accounts sign in here (read per request, as the backend reads its settings)."""
        return bool(getattr(settings, "AUTH_LDAP_SERVER_URI", ""))

    def get_invalid_login_error(self):
        # Set by web.ldap's ldap_error receiver while authenticate() ran. A local account that
        # signed in meanwhile never gets here, so this only shows when nobody could be checked.
        directory_error = getattr(self.request, "directory_error", None)
        if directory_error:
            return forms.ValidationError(directory_error, code="directory_unavailable")
        return super().get_invalid_login_error()
