"""The one error the policy engine raises for a bad document."""

from __future__ import annotations


class PolicyError(Exception):
    """A malformed policy document; the API maps it to MalformedPolicyDocumentException.

    ``message`` is a complete sentence meant for the client, naming the
    offending element so the author can fix it without guessing.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
