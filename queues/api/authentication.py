"""`Authorization: Token <key>` against hashed API tokens."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from queues.api.throttling import failed_auth_check, failed_auth_count
from queues.services import token_authenticate, token_known


class ApiTokenAuthentication(BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) == 2 and len(parts[1]) <= 200:
            # A key this process already knows to be valid needs no more checks:
            # the failed-authentication budget guards lookups, not known keys.
            token = token_known(key=parts[1].decode("ascii", "replace"))
            if token is not None:
                return token.user, token
        failed_auth_check(request)
        if len(parts) != 2:
            self._fail(request, "Invalid token header: expected 'Token <key>'.")
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError:
            self._fail(request, "Invalid token header: the key must be ASCII.")
        token = token_authenticate(key=key) if len(key) <= 200 else None
        if token is None:
            self._fail(request, "Invalid, expired or revoked token.")
        return token.user, token

    @staticmethod
    def _fail(request, detail: str):
        failed_auth_count(request)
        raise exceptions.AuthenticationFailed(detail)

    def authenticate_header(self, request) -> str:
        return self.keyword


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """Tells the OpenAPI schema how ApiTokenAuthentication works."""

    target_class = ApiTokenAuthentication
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <key>`; create keys with `manage.py create_token` or in the admin.",
        }
