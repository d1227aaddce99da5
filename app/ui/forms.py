"""Forms. Their CSRF field is checked app-wide by CSRFProtect before any view runs."""

from typing import Any

from annotated_types import Ge, Gt, Le
from flask import request
from flask_login import current_user
from flask_wtf import FlaskForm
from pydantic import ValidationError as ParamsError
from wtforms import (BooleanField, FloatField, IntegerField, PasswordField, SelectChoice, SelectField, StringField,
                     TextAreaField)
from wtforms.validators import DataRequired, EqualTo, Length, Optional, Regexp, ValidationError

from app import passwords, prompt_templates
from app.extensions import current
from app.llm import GenerationParams
from app.models import PromptTemplate
from app.submissions import MAX_INPUT_CHARS, MAX_SYSTEM_PROMPT_CHARS, Refused

# The generation knobs the chat form offers under "Advanced"; the rest keep the model's defaults.
ADVANCED = ("max_tokens", "temperature", "top_p")


class LoginForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=80)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1000)])


def unix_newlines(text: str | None) -> str | None:
    """Browsers send textarea line breaks as CRLF; the model should see the text as typed."""
    return text.replace("\r\n", "\n") if text else text


def within_generation_limits(form, field) -> None:
    """The same limits as the API's and the worker's: GenerationParams itself checks the value."""
    if field.data is None:
        return
    try:
        GenerationParams(**{field.name: field.data})
    except ParamsError as exc:
        raise ValidationError(f"{field.label.text}: {exc.errors()[0]['msg']}.") from None


def input_bounds(name: str) -> dict[str, Any]:
    """min/max/step for the browser's number input, from the field's limits in GenerationParams."""
    info = GenerationParams.model_fields[name]
    bounds: dict[str, Any] = {"step": 1 if info.annotation is int else 0.01}
    for limit in info.metadata:
        if isinstance(limit, Ge):
            bounds["min"] = limit.ge
        elif isinstance(limit, Gt):
            bounds["min"] = limit.gt + bounds["step"]
        elif isinstance(limit, Le):
            bounds["max"] = limit.le
    return bounds


class PromptForm(FlaskForm):
    # The same limits as the API's SubmitRequest; DataRequired also refuses a prompt of only spaces.
    prompt = TextAreaField("Message", filters=[unix_newlines],
                           validators=[DataRequired("Write a message first."), Length(max=MAX_INPUT_CHARS)])
    model = SelectField("Model", validate_choice=False)
    system_prompt = TextAreaField("System prompt", filters=[unix_newlines],
                                  validators=[Optional(), Length(max=MAX_SYSTEM_PROMPT_CHARS)])
    max_tokens = IntegerField("Max tokens", validators=[Optional(), within_generation_limits])
    temperature = FloatField("Temperature", validators=[Optional(), within_generation_limits])
    top_p = FloatField("Top p", validators=[Optional(), within_generation_limits])
    prompt_template = SelectField("Template", validate_choice=False)
    refused: str | None = None  # the code of the refusal the form shows (app/intake.py), as the API faces name it

    def __init__(self, *args, variables: dict[str, str] | None = None, **kwargs):
        """`variables` fill the chosen template's placeholders; by default, the posted `variable-NAME` fields."""
        super().__init__(*args, **kwargs)
        settings = current().settings
        self.model.choices = [(key, _model_label(key, settings.models[key].description))
                              for key in settings.offered_models]
        self.prompt_template.choices = [SelectChoice("", "None"), *template_choices(
            prompt_templates.every_version(current_user.id))]
        self.variables = posted_variables(request.form) if variables is None else variables

    def chosen_template(self) -> PromptTemplate | None:
        """The template whose variables the form asks for (None when none, or an unknown one, is chosen)."""
        if not self.prompt_template.data:
            return None
        try:
            return prompt_templates.find(current_user.id, self.prompt_template.data)
        except Refused:
            return None

    def overrides(self) -> dict[str, Any]:
        """The advanced settings the person filled in; empty ones keep the model's defaults."""
        return {name: self[name].data for name in ADVANCED if self[name].data is not None}

    def shows_advanced(self) -> bool:
        return bool(self.overrides()) or any(self[name].errors for name in ADVANCED)

    def defaults(self) -> dict[str, Any]:
        """The model's own values, shown as placeholders so an empty field says what it means."""
        model = self.model.data if self.model.data in current().settings.models else current().settings.default_model
        return current().settings.params_for(model).model_dump(include=set(ADVANCED))


def template_choices(versions: list[PromptTemplate]) -> list[SelectChoice]:
    """A group per template (`versions` by name, newest first): the latest chosen by name, so that the next prompt
    follows a new version, then each earlier one as `name@version`."""
    seen: set[str] = set()
    choices = []
    for template in versions:
        value = template.ref if template.name in seen else template.name
        seen.add(template.name)
        choices.append(SelectChoice(value, f"{template.name} (v{template.version})", optgroup=template.name))
    return choices


VARIABLE_FIELD = "variable-"


def posted_variables(fields) -> dict[str, str]:
    """The template variables among the fields (`variable-NAME`); an empty field is not filled in."""
    return {name.removeprefix(VARIABLE_FIELD): value for name, value in fields.items()
            if name.startswith(VARIABLE_FIELD) and value}


def _model_label(key: str, description: str) -> str:
    return f"{key} · {description}" if description else key


class TemplateForm(FlaskForm):
    """A new template, or (with the name fixed) the next version of one."""

    name = StringField("Name", validators=[
        DataRequired("Give the template a name."), Length(max=80),
        Regexp(f"^{prompt_templates.NAME.pattern}$", message="Letters, digits and . _ - only, starting with a "
                                                             "letter or digit.")])
    text = TextAreaField("System prompt", filters=[unix_newlines], validators=[
        DataRequired("Write the system prompt."), Length(max=MAX_SYSTEM_PROMPT_CHARS)])


class RenameForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired("A title cannot be empty."), Length(max=200)])


class KeyForm(FlaskForm):
    """With prefix "key" on the keys page, beside the user form."""

    name = StringField("Key name", validators=[DataRequired("Give the key a name."), Length(max=80),
                                           Regexp(r"^[A-Za-z0-9._-]+$", message="Letters, digits and . _ - only.")])


def new_password_rule(form, field) -> None:
    """The rule of app/passwords.py, the same as `users passwd` checks."""
    if refused := passwords.problem(field.data):
        raise ValidationError(f"{refused[0].upper()}{refused[1:]}.")


class UserForm(FlaskForm):
    """With prefix "user" on the keys page, beside the key form."""

    name = StringField("User name", validators=[DataRequired(), Length(max=80)])
    password = PasswordField("Password", validators=[DataRequired(), new_password_rule])
    is_admin = BooleanField("Admin")


class PasswordForm(FlaskForm):
    """The account page's: the current password (the view checks it, as a sign-in attempt) and the new one twice."""

    current_password = PasswordField("Current password", validators=[
        DataRequired("Type your current password."), Length(max=1000)])
    password = PasswordField("New password", validators=[DataRequired("Choose a new password."), new_password_rule])
    confirm = PasswordField("New password again", validators=[
        DataRequired("Type the new password again."), EqualTo("password", "The two new passwords differ.")])
