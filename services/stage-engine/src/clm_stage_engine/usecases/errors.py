"""What a use case refuses; the HTTP layer turns each into a problem document."""

from __future__ import annotations


class UnknownCustomer(LookupError):
    def __init__(self, customer_id: str) -> None:
        super().__init__(customer_id)
        self.customer_id = customer_id


class AlreadyAnonymised(Exception):
    """The id was anonymised before and came back: its pseudonym is taken."""
