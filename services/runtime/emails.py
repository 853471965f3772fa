"""Email addresses as every service checks them: one normal form, one validity rule.

Auth (sign-up, changes) and privacy (subjects named by email, rectifications) must agree
on what an address is, or a correction accepted by one would be refused by the other.
"""

from __future__ import annotations

import re

from .errors import Violations

EMAIL_RE = re.compile(r"[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+")
MAX_EMAIL = 254


def normalize_email(email: str) -> str:
    return email.strip().lower()


def check_email(v: Violations, name: str, email: str) -> None:
    """Record a violation on `name` unless `email` is a plausible address."""
    if not email:
        v.add(name, "is required")
    elif len(email) > MAX_EMAIL:
        v.add(name, f"must be at most {MAX_EMAIL} characters")
    elif not EMAIL_RE.fullmatch(email):
        v.add(name, "must be an email address like name@example.com")
