"""The rule every new password meets, whoever sets it (`users create` and `users passwd`, an admin's user form,
the account page): long enough to resist guessing, and short enough that bcrypt, which reads only its first
72 bytes, reads all of it."""

MIN_CHARACTERS = 8
MAX_BYTES = 72


def problem(password: str) -> str | None:
    """What keeps `password` from being a new password, as a phrase ("the password must ..."); None if nothing."""
    if len(password) < MIN_CHARACTERS:
        return f"the password must have at least {MIN_CHARACTERS} characters"
    if len(password.encode()) > MAX_BYTES:
        return f"the password must be at most {MAX_BYTES} bytes (bcrypt ignores the rest)"
    return None
