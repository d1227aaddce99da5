"""The account page: who you are, a new password (the current one first; your other sessions end), your API keys
in a few numbers, and signing out everywhere (which the top bar's Sign out does too: it ends every session)."""

from flask import flash, redirect, render_template, url_for
from flask_login import current_user, login_user

from app import keys, limits, passwords
from app.extensions import db
from app.models import User
from app.ui import bp
from app.ui.auth import check_password, wait
from app.ui.forms import PasswordForm
from app.ui.keys import USAGE_DAYS


def render_account(form: PasswordForm | None = None, status: int = 200, headers: dict[str, str] | None = None):
    return render_template("account.html", form=form or PasswordForm(formdata=None), days=USAGE_DAYS,
                           keys=keys.summary(current_user, USAGE_DAYS), min_characters=passwords.MIN_CHARACTERS
                           ), status, headers or {}


@bp.get("/account")
def account():
    return render_account()


@bp.post("/account/password")
def change_password():
    """The new password, once the current one checks out; else the form again, saying what is wrong."""
    form = PasswordForm()
    if form.validate():
        try:
            user = check_password(current_user.name, form.current_password.data)
        except limits.Limited as limited:
            form.current_password.errors.append(f"Too many password attempts. {wait(limited)}")
            return render_account(form, 429, {"Retry-After": str(limited.retry_after)})
        if user is not None:
            return _set_password(user, form.password.data)
        form.current_password.errors.append("That is not your current password.")
    return render_account(form, 422)


def _set_password(user: User, password: str):
    user.set_password(password)
    db.session.commit()
    login_user(user)  # this session takes the new session version; every other one ends
    flash("Your password is changed. Your other sessions have ended; this one stays signed in.")
    return redirect(url_for("ui.account"), 303)
