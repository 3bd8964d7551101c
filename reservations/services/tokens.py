"""API tokens (DRF's authtoken): the key a CI pipeline or script sends as `Authorization: Token`.
The token endpoint (reservations.api.tokens) and the profile page both get and replace it here."""

from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from .locks import service_transaction


def api_token_for(*, user):
    """The user's API token, made on first use."""
    token = Token.objects.filter(user=user).first()
    if token is not None:
        return token
    with service_transaction():
        # get_or_create: two first requests at once make one token (the one-per-user rule decides).
        return Token.objects.get_or_create(user=user)[0]


def api_token_rotate(*, user):
    """Replace the user's API token: the old key is refused (401) from the moment this commits."""
    with service_transaction():
        # Lock the user row: two rotations at once run one after the other instead of both deleting
        # the old key and then colliding on the one-token-per-user rule.
        get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk").first()
        Token.objects.filter(user=user).delete()
        return Token.objects.create(user=user)
