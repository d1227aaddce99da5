"""Signing in and out. Every UI page needs a signed-in user; password checks (sign-in, the account page's) are
limited per name and per address (app/limits.py). A session names its user's session version, so signing out, a
password change or `users disable` ends every copy of it.

Users come from `make run` (the first admin) and `flask --app wsgi users create NAME`. The original
ADMIN_PASSWORD_HASH still lets a user named "admin" in; the first such sign-in creates the "admin" row (with
that hash) so jobs and conversations can point at it."""

import re
from urllib.parse import urlsplit

import bcrypt
from flask import flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import select

from app import limits
from app.extensions import current, db, login_manager
from app.models import User
from app.ui import bp
from app.ui.forms import LoginForm

ADMIN = "admin"
# Checked when the name is unknown, so a wrong name takes as long as a wrong password and names stay secret.
UNKNOWN_USER_HASH = "$2b$12$AdBfBWbiro2/vRtLZ0i6Lu0zS66uD48wSIBxQ0cdX.uNUJvc2Ixaq"
PUBLIC_ENDPOINTS = {"ui.login", "ui.static", "ui.highlight_css"}

login_manager.login_view = "ui.login"


SESSION_USER = re.compile(r"([0-9]{1,18}):([0-9]{1,18})")


@login_manager.user_loader
def load_user(session_user: str) -> User | None:
    """The session's user, unless their session version has moved on since (signed out, new password, disabled)."""
    found = SESSION_USER.fullmatch(session_user)
    user = db.session.get(User, int(found.group(1))) if found else None
    if user is None or user.disabled or user.session_version != int(found.group(2)):
        return None
    return user


@login_manager.unauthorized_handler
def to_login_page():
    """A browser goes to the login page and comes back after; an htmx request (a poll whose session
    expired) would otherwise swap the login page into a chat bubble, so it is told to reload instead."""
    if request.headers.get("HX-Request") == "true":
        return "", 401, {"HX-Redirect": url_for("ui.login", next=_local_path(request.headers.get("HX-Current-URL")))}
    return redirect(url_for("ui.login", next=request.script_root + request.full_path.rstrip("?")))


@bp.before_request
def require_login():
    if request.endpoint not in PUBLIC_ENDPOINTS and not current_user.is_authenticated:
        return login_manager.unauthorized()
    return None


@bp.route("/login", methods=["GET", "POST"])
def login():
    next_page = _local_path(request.args.get("next")) or url_for("ui.conversations")
    if current_user.is_authenticated:
        return redirect(next_page)
    form = LoginForm()
    if not form.validate_on_submit():
        return render_template("login.html", form=form)
    name = form.name.data.strip()
    try:
        user = check_password(name, form.password.data)
    except limits.Limited as limited:
        error = f"Too many sign-in attempts. {wait(limited)}"
        return render_template("login.html", form=form, error=error), 429, {"Retry-After": str(limited.retry_after)}
    if user is None:
        return render_template("login.html", form=form, error="Wrong name or password.")
    session.clear()  # a fresh session (and CSRF token) for the signed-in user
    login_user(user)
    return redirect(next_page)


@bp.post("/logout")
def logout():
    end_sessions(current_user)
    logout_user()
    session.clear()
    flash("You are signed out.")
    return redirect(url_for("ui.login"))


def check_password(name: str, password: str) -> User | None:
    """`name`'s user if `password` is theirs (signing in, or the account page's current password), else None.

    The check counts against the sign-in limits, per name and per address, or raises `limits.Limited`: before the
    password is checked, so concurrent guesses cannot all be checked, and a guess counts the same on either page.
    The right password clears the name's count (the address's stays)."""
    limits.take(limits.login_per_address(), "login-address", request.remote_addr or "unknown")
    limits.take(limits.login_per_name(), "login-name", name)
    user = _authenticate(name, password)
    if user is not None:
        limits.forget(limits.login_per_name(), "login-name", name)
    return user


def wait(limited: limits.Limited) -> str:
    minutes = max(1, round(limited.retry_after / 60))
    return f"Wait about {minutes} minute{'s' * (minutes > 1)} and try again."


def end_sessions(user: User) -> None:
    """Every session of this user, copies included, stops working."""
    user.session_version += 1
    db.session.commit()


def _authenticate(name: str, password: str) -> User | None:
    user = db.session.scalar(select(User).where(User.name == name))
    if user is not None and user.disabled:
        password_matches(password, UNKNOWN_USER_HASH)  # as slow as any other refusal
        return None
    if password_matches(password, user.password_hash if user else UNKNOWN_USER_HASH):
        return user
    admin_hash = current().settings.admin_password_hash
    if name == ADMIN and admin_hash and password_matches(password, admin_hash):
        return user or _create_admin(admin_hash)
    return None


def password_matches(password: str, password_hash: str) -> bool:
    try:
        return bcrypt.checkpw(password.encode(), password_hash.encode())
    except ValueError:  # a malformed hash, or a password longer than bcrypt's 72 bytes
        return False


def _create_admin(password_hash: str) -> User:
    user = User(name=ADMIN, password_hash=password_hash, is_admin=True)
    db.session.add(user)
    db.session.commit()
    return user


def _local_path(target: str | None) -> str | None:
    """Only a path on this site may be a post-login destination (no open redirect to another host)."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        if parts.netloc != request.host:
            return None
        target = parts.path + (f"?{parts.query}" if parts.query else "")
    safe = target.startswith("/") and not target.startswith("//") and target.isprintable() and "\\" not in target
    return target if safe else None
