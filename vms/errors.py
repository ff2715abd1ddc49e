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


class Busy(VmsError):
    """Another write holds the database (a long import): nothing was changed; try again after ``retry_after`` s."""

    def __init__(
        self, message: str = "the database is busy with another write; try again shortly", *, retry_after: int = 5
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigurationError(VmsError):
    """The service is set up unsafely or incompletely (a key file others can read, a missing production key)."""
