"""The sign-in page: Django's form and view, except that a directory that did not answer is not a
wrong password, that `next` never leads back to the login page itself, and that a username longer
than any account's is a form error (here and on the admin's sign-in page)."""

from urllib.parse import unquote, urlsplit

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.validators import MaxLengthValidator
from django.shortcuts import resolve_url


class UsernameLengthChecked:
    """AuthenticationForm sets the username field's max_length after the field is built, so nothing
    checks it: a longer username went on to authenticate() and django-axes, whose 255-character
    column refused it (a 500). Checked here, it is the field's error and nobody is signed in."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        username = self.fields["username"]
        username.validators.append(MaxLengthValidator(username.max_length))


class AdminSignInForm(UsernameLengthChecked, AdminAuthenticationForm):
    """The admin site's sign-in form (admin.site.login_form)."""


class SignInForm(UsernameLengthChecked, AuthenticationForm):
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
