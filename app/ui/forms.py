"""Forms. Their CSRF field is checked app-wide by CSRFProtect before any view runs."""

from flask_wtf import FlaskForm
from wtforms import PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from app.jobs import settings


class LoginForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=80)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1000)])


def unix_newlines(text: str | None) -> str | None:
    """Browsers send textarea line breaks as CRLF; the model should see the text as typed."""
    return text.replace("\r\n", "\n") if text else text


class PromptForm(FlaskForm):
    # The same limits as the API's SubmitRequest; DataRequired also refuses a prompt of only spaces.
    prompt = TextAreaField("Message", filters=[unix_newlines],
                           validators=[DataRequired("Write a message first."), Length(max=1_000_000)])
    model = SelectField("Model", validate_choice=False)
    system_prompt = TextAreaField("System prompt", filters=[unix_newlines], validators=[Optional(), Length(max=100_000)])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model.choices = settings().offered_models

    def validate_model(self, field) -> None:
        offered = settings().offered_models
        if field.data not in offered:
            raise ValidationError(f"Unknown model '{field.data}'; available: {', '.join(offered)}.")


class RenameForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired("A title cannot be empty."), Length(max=200)])
