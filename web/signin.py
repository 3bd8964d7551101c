"""The sign-in page: Django's form and view, except that a directory that did not answer is not a
wrong password, and that `next` never leads back to the login page itself."""

from urllib.parse import unquote, urlsplit

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.shortcuts import resolve_url


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


class SignInView(LoginView):
    """LoginView for people already signed in too (redirect_authenticated_user): with `next` set to
    the login page (a stale link, a bookmark), Django would send them to the page they are on and
    raises "Redirection loop" instead (a 500). Such a `next` counts as none: LOGIN_REDIRECT_URL.
    Off-site `next`s are dropped by LoginView already."""

    authentication_form = SignInForm
    redirect_authenticated_user = True

    def get_redirect_url(self):
        url = super().get_redirect_url()
        if url and unquote(urlsplit(url).path) == resolve_url(settings.LOGIN_URL):
            return ""
        return url
