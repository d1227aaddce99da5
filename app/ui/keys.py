"""API keys and users: each user creates, lists and revokes their own keys and sees what they did; an admin sees
and revokes everyone's keys and manages users. A new key and its webhook secret are shown once."""

from flask import abort, flash, redirect, render_template, url_for
from flask_login import current_user
from sqlalchemy import select

from app.extensions import db
from app.keys import TooManyKeys, create_key, usage, visible_keys
from app.models import ApiKey, User
from app.ui import bp
from app.ui.auth import end_sessions
from app.ui.forms import KeyForm, UserForm

USAGE_DAYS = 7


def render_keys(created: tuple[str, str] | None = None, key_form: KeyForm | None = None,
                user_form: UserForm | None = None, status: int = 200):
    users = db.session.scalars(select(User).order_by(User.name)).all() if current_user.is_admin else []
    return render_template("keys.html", keys=db.session.scalars(visible_keys(current_user)).all(),
                           usage=usage(current_user, USAGE_DAYS), days=USAGE_DAYS, created=created, users=users,
                           key_form=key_form or KeyForm(formdata=None, prefix="key"),
                           user_form=user_form or UserForm(formdata=None, prefix="user")
                           ), status


def _name_taken(model: type[ApiKey | User], form: KeyForm | UserForm, what: str) -> bool:
    """Whether a `model` row has the form's name already; if so, the form says so."""
    if db.session.scalar(select(model).where(model.name == form.name.data)) is None:
        return False
    form.name.errors.append(f"A {what} with this name exists already.")
    return True


@bp.get("/keys")
def keys_page():
    return render_keys()


@bp.post("/keys")
def create_api_key():
    form = KeyForm(prefix="key")
    if not form.validate() or _name_taken(ApiKey, form, "key"):
        return render_keys(key_form=form, status=422)
    try:
        key = create_key(form.name.data, current_user.id)
    except TooManyKeys as refused:
        form.name.errors.append(f"{refused}.")
        return render_keys(key_form=form, status=422)
    secret = db.session.scalar(select(ApiKey.webhook_secret).where(ApiKey.name == form.name.data))
    return render_keys(created=(key, secret))


@bp.post("/keys/<int:key_id>/revoke")
def revoke_api_key(key_id: int):
    key = db.session.get(ApiKey, key_id)
    if key is None or not (key.user_id == current_user.id or current_user.is_admin):
        abort(404)
    db.session.delete(key)
    db.session.commit()
    flash(f"Revoked the key “{key.name}”.")
    return redirect(url_for("ui.keys_page"), 303)


@bp.post("/users")
def create_user():
    if not current_user.is_admin:
        abort(404)
    form = UserForm(prefix="user")
    if not form.validate() or _name_taken(User, form, "user"):
        return render_keys(user_form=form, status=422)
    user = User(name=form.name.data, is_admin=form.is_admin.data)
    user.set_password(form.password.data)
    db.session.add(user)
    db.session.commit()
    flash(f"Created the user “{form.name.data}”.")
    return redirect(url_for("ui.keys_page"), 303)


@bp.post("/users/<int:user_id>/disable")
def disable_user(user_id: int):
    user = db.session.get(User, user_id)
    if not current_user.is_admin or user is None or user.id == current_user.id:
        abort(404)
    user.disabled = True
    end_sessions(user)
    flash(f"Disabled “{user.name}”: they can no longer sign in, and their keys stop working.")
    return redirect(url_for("ui.keys_page"), 303)
