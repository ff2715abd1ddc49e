"""One error hierarchy for the domain; the API maps it to HTTP status codes in one place."""

from __future__ import annotations


class VmsError(Exception):
    """Base of every expected error; the message is safe to show to an operator."""


class NotFound(VmsError):
    pass


class ValidationFailed(VmsError):
    pass


class Conflict(VmsError):
    pass


class Unauthorized(VmsError):
    pass


class Forbidden(VmsError):
    pass
