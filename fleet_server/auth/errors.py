"""Errors the auth layer raises; the app maps them to 401 / 403 (fleet_server/api/auth_deps.py)."""


class NotAuthenticated(Exception):
    """No valid credentials: the API answers 401, a page redirects to /login."""


class Forbidden(Exception):
    """Authenticated, but the role, scope or region does not allow this."""
