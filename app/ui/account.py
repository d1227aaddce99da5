"""The account page: who you are, a new password (the current one first; your other sessions end), your API keys
in a few numbers, and signing out everywhere (which the top bar's Sign out does too: it ends every session)."""

from flask import flash, redirect, render_template, url_for
from flask_login import current_user, login_user

from app import keys, limits, passwords
from app.extensions import db
from app.ui import bp
from app.ui.auth import authenticate, forget_attempts, take_attempt, wait
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
    form = PasswordForm()
    if not form.validate():
        return render_account(form, 422)
    try:
        take_attempt(current_user.name)
    except limits.Limited as limited:
        form.current_password.errors.append(f"Too many password attempts. {wait(limited)}")
        return render_account(form, 429, {"Retry-After": str(limited.retry_after)})
    user = authenticate(current_user.name, form.current_password.data)
    if user is None:
        form.current_password.errors.append("That is not your current password.")
        return render_account(form, 422)
    forget_attempts(user.name)
    user.set_password(form.password.data)
    db.session.commit()
    login_user(user)  # this session takes the new session version; every other one ends
    flash("Your password is changed. Your other sessions have ended; this one stays signed in.")
    return redirect(url_for("ui.account"), 303)
