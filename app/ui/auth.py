"""Logging in and out. Every UI page needs a login; failed logins are throttled per name and address.

Users come from `flask --app wsgi users create NAME`. The original ADMIN_PASSWORD_HASH still lets a user
named "admin" in; the first such login creates the "admin" row (with that hash) so jobs and conversations
can point at it."""

import logging
from urllib.parse import urlsplit

import bcrypt
from flask import flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from redis import Redis, RedisError
from sqlalchemy import select

from app.extensions import current, db, login_manager
from app.models import User
from app.ui import bp
from app.ui.forms import LoginForm

log = logging.getLogger(__name__)

ADMIN = "admin"
# Checked when the name is unknown, so a wrong name takes as long as a wrong password and names stay secret.
UNKNOWN_USER_HASH = "$2b$12$AdBfBWbiro2/vRtLZ0i6Lu0zS66uD48wSIBxQ0cdX.uNUJvc2Ixaq"
PUBLIC_ENDPOINTS = {"ui.login", "ui.static", "ui.highlight_css"}

login_manager.login_view = "ui.login"


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id)) if user_id.isdigit() else None


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
    throttle = LoginThrottle(current().redis, name, request.remote_addr or "unknown")
    if throttle.blocked():
        minutes = max(1, round(throttle.seconds_left() / 60))
        error = f"Too many failed attempts for this name. Wait about {minutes} minute{'s' * (minutes > 1)} and try again."
        return render_template("login.html", form=form, error=error), 429, {"Retry-After": str(throttle.seconds_left())}
    user = authenticate(name, form.password.data)
    if user is None:
        throttle.record_failure()
        return render_template("login.html", form=form, error="Wrong name or password.")
    throttle.clear()
    session.clear()  # a fresh session (and CSRF token) for the signed-in user
    login_user(user)
    return redirect(next_page)


@bp.post("/logout")
def logout():
    logout_user()
    session.clear()
    flash("You are signed out.")
    return redirect(url_for("ui.login"))


def authenticate(name: str, password: str) -> User | None:
    user = db.session.scalar(select(User).where(User.name == name))
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
    user = User(name=ADMIN, password_hash=password_hash)
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
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else None


class LoginThrottle:
    """Failed logins per (name, address) in a fixed window, counted in Redis so every web process sees them.

    If Redis is unreachable the throttle lets logins through (and logs it): the chat needs Redis anyway,
    and locking everyone out while it restarts would be worse."""

    def __init__(self, redis: Redis, name: str, address: str):
        self.redis = redis
        self.key = f"llamalith:login-failures:{address}:{name}"

    def blocked(self) -> bool:
        try:
            return int(self.redis.get(self.key) or 0) >= current().settings.login_attempts
        except RedisError as exc:
            log.warning("login throttle unavailable (%s); allowing the attempt", exc)
            return False

    def seconds_left(self) -> int:
        try:
            return max(self.redis.ttl(self.key), 1)
        except RedisError:
            return current().settings.login_window

    def record_failure(self) -> None:
        # SET NX EX starts the window with the first failure; INCR keeps that expiry. One transaction,
        # so a crash between the two can never leave a counter without an expiry.
        try:
            self.redis.pipeline().set(self.key, 0, ex=current().settings.login_window, nx=True).incr(self.key).execute()
        except RedisError as exc:
            log.warning("login throttle unavailable (%s); failure not counted", exc)

    def clear(self) -> None:
        try:
            self.redis.delete(self.key)
        except RedisError:
            pass
