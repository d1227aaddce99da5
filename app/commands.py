"""CLI: flask --app wsgi keys create|list|revoke, users create|passwd|ensure-admin."""

import secrets
import sys

import bcrypt
import click
from sqlalchemy import select

from app.api.auth import create_key
from app.extensions import current, db
from app.models import ApiKey, User


@click.group(help="Manage API keys.")
def keys() -> None:
    pass


@keys.command("create", help="Create a key and print it (shown only once) on the last line.")
@click.argument("name")
@click.option("--interactive", is_flag=True, help="Allow this key to submit interactive-priority jobs.")
def create_key_command(name: str, interactive: bool) -> None:
    if db.session.scalar(select(ApiKey).where(ApiKey.name == name)):
        raise click.ClickException(f"a key named '{name}' already exists")
    key = create_key(name, interactive)
    click.echo(f"Created API key '{name}'. Store it now; it cannot be shown again:", err=True)
    click.echo(key)


@keys.command("list", help="List keys (names and prefixes, never the keys).")
def list_keys() -> None:
    for key in db.session.scalars(select(ApiKey).order_by(ApiKey.name)):
        used = key.last_used_at.isoformat(timespec="seconds") if key.last_used_at else "never"
        click.echo(f"{key.name}\t{key.prefix}…\tcreated {key.created_at:%Y-%m-%d}\tlast used {used}"
                   f"{chr(9) + 'interactive' if key.interactive else ''}")


@keys.command("revoke", help="Delete a key; requests using it get 401 at once.")
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
def create_user(name: str, password_stdin: bool) -> None:
    user = db.session.scalar(select(User).where(User.name == name)) or User(name=name)
    _set_password(user, _read_password(password_stdin))
    click.echo(f"User '{name}' can now log in.")


@users.command("passwd", help="Change a user's password.")
@click.argument("name")
@password_stdin_option
def change_password(name: str, password_stdin: bool) -> None:
    user = db.session.scalar(select(User).where(User.name == name))
    if user is None:
        raise click.ClickException(f"no user named '{name}'")
    _set_password(user, _read_password(password_stdin))
    click.echo(f"Changed the password of '{name}'.")


@users.command("ensure-admin", help="On first run (no user yet): create 'admin' with a generated password and "
                                    "print it, once.")
def ensure_admin() -> None:
    if current().settings.admin_password_hash or db.session.scalar(select(User).limit(1)):
        return
    password = secrets.token_urlsafe(12)
    _set_password(User(name="admin"), password)
    click.echo("Created the user 'admin'. Its password is shown only this once:")
    click.echo(f"admin password: {password}")
    click.echo("Change it with: .venv/bin/flask --app wsgi users passwd admin")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        raise click.ClickException("the password must have at least 8 characters")
    if len(password.encode()) > 72:
        raise click.ClickException("the password must be at most 72 bytes (bcrypt ignores the rest)")
    return password


def _set_password(user: User, password: str) -> None:
    user.password_hash = hash_password(password)
    db.session.add(user)
    db.session.commit()


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()
