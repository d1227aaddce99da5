"""Prompt templates over the API: list, save (every change is a new version), read one version."""

from flask import g, url_for

from app import prompt_templates, request_body
from app.api import bp
from app.api.schemas import PromptTemplateRequest, parse
from app.errors import APIError


@bp.get("/prompt-templates")
def list_prompt_templates():
    return {"prompt_templates": [prompt_templates.template_json(template)
                                 for template in prompt_templates.latest(g.api_key.user_id)]}


@bp.post("/prompt-templates")
def save_prompt_template():
    """201 with the new version; 200 with the latest one when its text is unchanged."""
    body = parse(PromptTemplateRequest, request_body.json_body())
    template, created = prompt_templates.save(g.api_key.user_id, body.name, body.text)
    location = url_for("api.prompt_template", reference=template.ref)
    return prompt_templates.template_json(template), 201 if created else 200, {"Location": location}


@bp.get("/prompt-templates/<reference>")
def prompt_template(reference: str):
    """`name` (the latest version) or `name@version`, with the list of all versions."""
    template = prompt_templates.find(g.api_key.user_id, reference)
    if template is None:
        raise APIError(404, "not_found", f"no prompt template '{reference}'")
    return prompt_templates.template_json(template, prompt_templates.history(g.api_key.user_id, template.name))
