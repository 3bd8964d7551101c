"""Sign in through the API: a username and password for the caller's token (DRF's ObtainAuthToken,
with this API's error contract).

authenticate() is given the request, so django-axes counts failed attempts and locks the client's
address out (429) as on the login page, and the backends are the site's: local accounts, and the
company directory when LDAP is configured. A directory that did not answer is a 503 rather than a
wrong password: web.ldap's ldap_error receiver notes why on the request (`directory_error`).
"""

from django.contrib.auth import authenticate
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from apibase.serializers import StrictSerializer

from .. import services
from .authentication import SessionAuthentication

INVALID_CREDENTIALS = "Unable to sign in with this username and password."


class TokenRequestSerializer(StrictSerializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False, style={"input_type": "password"})


class ObtainTokenView(APIView):
    # No token authentication: a client whose old token was deleted can still get a new one. The
    # session class counts the (anonymous) request against API_THROTTLE_ANON.
    authentication_classes = [SessionAuthentication]
    permission_classes = [permissions.AllowAny]

    @extend_schema(
        request=TokenRequestSerializer,
        responses={
            200: inline_serializer("Token", {"token": serializers.CharField()}),
            400: OpenApiResponse(description="A field is missing or invalid, or the username and password are wrong."),
            429: OpenApiResponse(description="Too many failed sign-ins from this address (django-axes)."),
            503: OpenApiResponse(description="The company directory did not answer, and no local account matched."),
        },
        auth=[],
    )
    def post(self, request):
        body = TokenRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        # The Django request: axes marks a lockout on it, and the middleware reads the mark there.
        django_request = request._request
        user = authenticate(django_request, **body.validated_data)
        if user is None or not user.is_active:
            directory_error = getattr(django_request, "directory_error", None)
            if user is None and directory_error:
                return Response({"detail": directory_error}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
            raise serializers.ValidationError({"non_field_errors": [INVALID_CREDENTIALS]})
        return Response({"token": services.api_token_for(user=user).key})
