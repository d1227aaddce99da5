"""Prompt templates in the browser: the list, a new template, a template's versions (each readable, none ever
changed) and the edit that saves the next one; and the variable fields the chat form shows for a chosen one."""

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from app import prompt_templates
from app.submissions import Refused
from app.ui import bp
from app.ui.forms import TemplateForm, posted_variables


@bp.get("/prompt-templates")
def prompt_templates_page():
    return render_templates_page(TemplateForm(formdata=None))


def render_templates_page(form: TemplateForm, status: int = 200):
    return render_template("prompt_templates.html", templates=prompt_templates.latest(current_user.id),
                           form=form), status


@bp.post("/prompt-templates")
def save_prompt_template():
    """A new template, or the next version of the one named (its page's edit form posts here too)."""
    form = TemplateForm()
    if not form.validate():
        return refuse(form, 422)
    try:
        template, created = prompt_templates.save(current_user.id, form.name.data, form.text.data)
    except Refused as refused:
        form.text.errors.append(refused.message)
        return refuse(form, refused.status)
    flash(f"Saved {template.ref}." if created else f"No change: {template.ref} has this text already.")
    return redirect(url_for("ui.prompt_template", name=template.name), 303)


def refuse(form: TemplateForm, status: int):
    """The form again with its errors: on the template's page when it exists, else on the list."""
    versions = prompt_templates.history(current_user.id, form.name.data or "")
    if versions:
        return render_template_page(versions, versions[0], form, status)
    return render_templates_page(form, status)


@bp.get("/prompt-templates/<name>")
def prompt_template(name: str):
    """The latest version, or `?version=N`; the edit form starts from the version shown."""
    versions = prompt_templates.history(current_user.id, name)
    wanted = request.args.get("version", type=int)
    shown = next((each for each in versions if wanted in (None, each.version)), None)
    if shown is None:
        abort(404)
    return render_template_page(versions, shown, TemplateForm(formdata=None, name=name, text=shown.text))


def render_template_page(versions, shown, form: TemplateForm, status: int = 200):
    return render_template("prompt_template.html", versions=versions, shown=shown, form=form), status


@bp.get("/prompt-template-fields")
def template_fields():
    """The chat form's fields for the template just chosen, keeping values already typed."""
    try:
        template = prompt_templates.find(current_user.id, request.args.get("prompt_template") or "")
    except Refused:  # none chosen, or not a reference at all
        template = None
    return render_template("partials/_template_fields.html", template=template, values=posted_variables(request.args))
