"""HTTP Basic protection for the API (`--api-auth user:password[,user2:password2]`, A1111's syntax).

Every configured pair is compared in constant time, and all of them are always compared, so neither the
time of an answer nor its content tells a caller which part of a guess was right.
"""

from __future__ import annotations

import secrets
from typing import Callable, Sequence

from fastapi import Depends, HTTPException, status
from fastapi.security import HTTPBasic, HTTPBasicCredentials

Credentials = Sequence[tuple[str, str]]


def parse_credentials(text: str | None) -> list[tuple[str, str]]:
    """ "alice:pw1,bob:pw2" -> [("alice", "pw1"), ("bob", "pw2")]; a password may contain ':' but not ','."""
    pairs: list[tuple[str, str]] = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        user, sep, password = part.strip().partition(":")
        if not sep or not user or not password:
            raise ValueError(f"--api-auth expects user:password (several separated by commas), got {part.strip()!r}.")
        pairs.append((user, password))
    return pairs


def credentials_match(given_user: str, given_password: str, credentials: Credentials) -> bool:
    """True when the pair is one of `credentials`; every pair is compared, each in constant time."""
    user_bytes, password_bytes = given_user.encode("utf-8"), given_password.encode("utf-8")
    found = False
    for user, password in credentials:
        user_ok = secrets.compare_digest(user_bytes, user.encode("utf-8"))
        password_ok = secrets.compare_digest(password_bytes, password.encode("utf-8"))
        found |= user_ok & password_ok
    return found


def basic_auth(credentials: Credentials) -> Callable[..., None]:
    """A FastAPI dependency that answers 401 (with a Basic challenge) unless the request carries a known pair."""
    scheme = HTTPBasic(auto_error=False, description="The user:password given to --api-auth.")
    pairs = list(credentials)

    def check(given: HTTPBasicCredentials | None = Depends(scheme)) -> None:
        if given is None or not credentials_match(given.username, given.password, pairs):
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="Incorrect username or password",
                headers={"WWW-Authenticate": "Basic"},
            )

    return check
