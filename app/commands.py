"""CLI: flask --app wsgi keys create|list|revoke, users create|passwd|disable|ensure-admin."""

import secrets
import sys

import click
from limits import parse
from sqlalchemy import select

from app import passwords
from app.keys import TooManyKeys, create_key
from app.extensions import current, db
from app.models import NO_PASSWORD, ApiKey, User


@click.group(help="Manage API keys.")
def keys() -> None:
    pass


@keys.command("create", help="Create a key and print it (shown only once) on the last line, after its webhook "
                              "secret.")
@click.argument("name")
@click.option("--user", "user_name", help="The user the key acts as (default: the first admin).")
@click.option("--interactive", is_flag=True, help="Allow this key to submit interactive-priority jobs.")
@click.option("--rate-limit", help='Requests this key may make, e.g. "60/minute" (default: API_RATE_LIMIT).')
@click.option("--max-queued", type=click.IntRange(min=1), help="Jobs this key may have waiting (default: "
                                                               "MAX_QUEUED_PER_KEY).")
def create_key_command(name: str, user_name: str | None, interactive: bool, rate_limit: str | None,
                       max_queued: int | None) -> None:
    if db.session.scalar(select(ApiKey).where(ApiKey.name == name)):
        raise click.ClickException(f"a key named '{name}' already exists")
    if rate_limit:
        try:
            parse(rate_limit)
        except ValueError:
            raise click.ClickException(f"--rate-limit '{rate_limit}' is not a limit like '60/minute' or "
                                       "'1000 per day'") from None
    user = _user(user_name) if user_name else _first_admin()
    try:
        key = create_key(name, user.id, interactive, rate_limit, max_queued)
    except TooManyKeys as refused:
        raise click.ClickException(f"user '{user.name}': {refused}") from None
    secret = db.session.scalar(select(ApiKey.webhook_secret).where(ApiKey.name == name))
    click.echo(f"Created API key '{name}' for user '{user.name}'. Store both now; they cannot be shown again:",
               err=True)
    click.echo(f"webhook_secret: {secret}")
    click.echo(key)


@keys.command("list", help="List keys (names and prefixes, never the keys).")
def list_keys() -> None:
    for key in db.session.scalars(select(ApiKey).order_by(ApiKey.name)):
        used = key.last_used_at.isoformat(timespec="seconds") if key.last_used_at else "never"
        extras = [f"rate limit {key.rate_limit}"] * bool(key.rate_limit) + [f"max queued {key.max_queued}"] * bool(
            key.max_queued) + ["interactive"] * key.interactive
        click.echo("\t".join([key.name, f"{key.prefix}…", f"user {key.user.name}", f"created {key.created_at:%Y-%m-%d}",
                              f"last used {used}", *extras]))


@keys.command("revoke", help="Delete a key; requests using it get 401 within 2 s (web processes remember keys).")
@click.argument("name")
def revoke_key(name: str) -> None:
    key = db.session.scalar(select(ApiKey).where(ApiKey.name == name))
    if key is None:
        raise click.ClickException(f"no key named '{name}'")
    db.session.delete(key)
    db.session.commit()
    click.echo(f"Revoked API key '{name}'.")


@click.group(help="Manage UI users.")
def users() -> None:
    pass


password_stdin_option = click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")


@users.command("create", help="Create a user, or set the password of an existing one.")
@click.argument("name")
@password_stdin_option
@click.option("--admin", is_flag=True, help="An admin sees every user's conversations and jobs in the UI.")
def create_user(name: str, password_stdin: bool, admin: bool) -> None:
    user = db.session.scalar(select(User).where(User.name == name)) or User(name=name)
    user.is_admin = user.is_admin or admin
    user.disabled = False
    _set_password(user, _read_password(password_stdin))
    click.echo(f"User '{name}' can now log in.")


@users.command("passwd", help="Change a user's password.")
@click.argument("name")
@password_stdin_option
def change_password(name: str, password_stdin: bool) -> None:
    user = _user(name)
    _set_password(user, _read_password(password_stdin))
    click.echo(f"Changed the password of '{name}'; their other sessions have ended.")


@users.command("disable", help="Stop a user from signing in or using their API keys; ends their sessions.")
@click.argument("name")
def disable_user(name: str) -> None:
    user = _user(name)
    user.disabled = True
    user.session_version += 1
    db.session.commit()
    click.echo(f"Disabled '{name}' (users create {name} enables them again with a new password).")


@users.command("ensure-admin", help="On first run (no user yet): create 'admin' with a generated password and "
                                    "print it, once.")
def ensure_admin() -> None:
    if current().settings.admin_password_hash or db.session.scalar(select(User).where(User.password_hash != NO_PASSWORD)):
        return
    password = secrets.token_urlsafe(12)
    admin = db.session.scalar(select(User).where(User.name == "admin")) or User(name="admin")
    admin.is_admin = True
    _set_password(admin, password)
    click.echo("Created the user 'admin'. Its password is shown only this once:")
    click.echo(f"admin password: {password}")
    click.echo("Change it with: .venv/bin/flask --app wsgi users passwd admin")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if refused := passwords.problem(password):
        raise click.ClickException(refused)
    return password


def _set_password(user: User, password: str) -> None:
    user.set_password(password)
    db.session.add(user)
    db.session.commit()


def _user(name: str) -> User:
    user = db.session.scalar(select(User).where(User.name == name))
    if user is None:
        raise click.ClickException(f"no user named '{name}'")
    return user


def _first_admin() -> User:
    admin = db.session.scalar(select(User).where(User.is_admin).order_by(User.id).limit(1))
    if admin is None:
        raise click.ClickException("no admin yet: 'make run' creates one, or use 'users create NAME --admin'")
    return admin

