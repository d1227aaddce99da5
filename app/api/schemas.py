"""Request bodies, validated with the same GenerationParams the worker uses."""

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from app.errors import APIError, validation_message
from app.llm import GenerationParams
from app.prompt_templates import NAME as TEMPLATE_NAME
from app.submissions import MAX_INPUT_CHARS, MAX_SYSTEM_PROMPT_CHARS, valid_session_id, valid_text


class SubmitRequest(GenerationParams):
    """POST /api/submit. Generation fields are optional here: unset means "use the model's default"."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_input: str = Field(min_length=1, max_length=MAX_INPUT_CHARS)
    model: str | None = None
    session_id: str | None = Field(None, description="conversation id; created when new")
    system_prompt: str | None = Field(None, max_length=MAX_SYSTEM_PROMPT_CHARS,
                                      description="default: the model's; an empty string sends none")
    priority: Literal["interactive", "batch"] | None = None
    callback_url: str | None = Field(None, max_length=2000, description="POSTed the job's JSON when it ends")
    prompt_template: str | None = Field(None, max_length=100, description="the system prompt from a template: "
                                        "'name' (its latest version) or 'name@version'; not with system_prompt")
    variables: dict[str, str] | None = Field(None, description="values for the template's {{name}} placeholders")

    @field_validator("user_input")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("*")
    @classmethod
    def _unicode_text(cls, value: Any) -> Any:
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and not valid_text(text):
                raise ValueError("must be valid Unicode text (it has a lone surrogate)")
        return value

    @field_validator("session_id")
    @classmethod
    def _session_id(cls, value: str | None) -> str | None:
        if value is not None and not valid_session_id(value):
            raise ValueError("must be 1-128 characters: letters, digits and . _ : @ - (e.g. 'story-123')")
        return value

    def session_id_or_new(self) -> str:
        """The client's conversation, or a new one named for it."""
        return self.session_id or f"api-{uuid.uuid4().hex[:12]}"

    def overrides(self) -> dict[str, Any]:
        """Only the generation params the client actually sent."""
        fields = set(GenerationParams.model_fields) & self.model_fields_set
        return self.model_dump(include=fields, mode="json")


class PromptTemplateRequest(BaseModel):
    """POST /api/prompt-templates: a new template, or the next version of an existing one."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(pattern=f"^{TEMPLATE_NAME.pattern}$")
    text: str = Field(min_length=1, max_length=MAX_SYSTEM_PROMPT_CHARS,
                      description="the system prompt, with {{name}} placeholders for variables")

    @field_validator("text")
    @classmethod
    def _unicode_text(cls, value: str) -> str:
        if not valid_text(value):
            raise ValueError("must be valid Unicode text (it has a lone surrogate)")
        if not value.strip():
            raise ValueError("must not be blank")
        return value


def parse(schema: type[BaseModel], data: Any) -> BaseModel:
    if not isinstance(data, dict):
        raise APIError(400, "invalid_json", "the request body must be a JSON object")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise APIError(400, "invalid_request", validation_message(exc)) from None
