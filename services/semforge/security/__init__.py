"""Identities, bearer tokens, service-to-service trust and TLS for every semforge service.

Server side: :class:`AuthInterceptor` (installed by :func:`semforge.rpc.build_server`
from :class:`AuthSettings`) authenticates every RPC but health and reflection
and makes :func:`current_identity` available to servicers; one audit line per
call. Client side: :func:`open_channel` sends a token (:func:`client_token`)
and speaks TLS/mTLS; :func:`service_channel` is the gateway's channel to the
services behind it. Tokens: :class:`TokenRegistry`, ``semforge admin token``.
"""

from ._client import BearerToken, client_token, open_channel, read_pem, service_channel, set_process_service_token
from ._policy import DEFAULT_TENANT, can_access, owner_tenant
from ._server import (AUTH_MODES, OPEN_METHOD_PREFIXES, AuthInterceptor, Authenticator, AuthSettings,
                      current_identity, is_loopback_peer)
from ._tokens import AuthError, Identity, Role, TokenRecord, TokenRegistry, new_secret, parse_token, semforge_home

__all__ = [
    "AUTH_MODES", "AuthError", "DEFAULT_TENANT", "can_access", "owner_tenant", "AuthInterceptor", "AuthSettings", "Authenticator", "BearerToken", "Identity",
    "OPEN_METHOD_PREFIXES", "Role", "TokenRecord", "TokenRegistry", "client_token", "current_identity",
    "is_loopback_peer", "new_secret", "open_channel", "parse_token", "read_pem", "semforge_home",
    "service_channel", "set_process_service_token",
]
