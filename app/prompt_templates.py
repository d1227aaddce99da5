"""Prompt templates: a user's named system prompts, versioned, with `{{ name }}` placeholders.

Saving a changed text adds the next version; no version is ever changed or removed, so `name@version` always
gives the same text and a job can record exactly which one it used. Filling is one pass of plain substitution:
a value is never read as a template and nothing in a template can run code (no template engine)."""

import re

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.models import PLACEHOLDER, PromptTemplate, iso
from app.submissions import MAX_SYSTEM_PROMPT_CHARS, Refused, valid_text

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
REFERENCE = re.compile(r"(?P<name>[^@]+)(?:@(?P<version>[1-9][0-9]{0,8}))?")
MAX_VARIABLES = 100
MAX_PLACEHOLDERS = 1000  # uses of variables in one template; each may be filled with up to 100,000 characters
NAME_RULE = "1-80 characters: letters, digits and . _ - (e.g. 'support-reply')"


def fill(template: PromptTemplate, variables: dict[str, str]) -> str:
    """The template's text with every placeholder replaced by its variable; extra variables are ignored (a client
    may keep sending one that a newer version no longer uses)."""
    for name in template.variables:
        if name not in variables:
            raise Refused("missing_variable", f"prompt template '{template.ref}' needs the variable '{name}'")
    placeholders = list(PLACEHOLDER.finditer(template.text))
    check_placeholder_count(len(placeholders), f"prompt template '{template.ref}'")
    if filled_length(template.text, placeholders, variables) > MAX_SYSTEM_PROMPT_CHARS:
        raise Refused("invalid_request", f"prompt template '{template.ref}' filled in is longer than "
                                         f"{MAX_SYSTEM_PROMPT_CHARS} characters")
    return PLACEHOLDER.sub(lambda match: variables[match[1]], template.text)


def filled_length(text: str, placeholders: list[re.Match], variables: dict[str, str]) -> int:
    """The length `text` will have once filled, counted before it is built: 20,000 placeholders of a 50 KB value
    would otherwise make a 1 GB string only to refuse it."""
    return len(text) + sum(len(variables[match[1]]) - len(match[0]) for match in placeholders)


def check_placeholder_count(count: int, what: str) -> None:
    if count > MAX_PLACEHOLDERS:
        raise Refused("invalid_request", f"{what} has {count} {{{{placeholders}}}}; at most {MAX_PLACEHOLDERS} "
                                         "are allowed")


def parse_reference(reference: str) -> tuple[str, int | None]:
    """`name` (the latest version) or `name@version`."""
    match = REFERENCE.fullmatch(reference)
    if not match or not NAME.fullmatch(match["name"]):
        raise Refused("invalid_request", f"prompt_template must be a name or name@version; a name is {NAME_RULE}")
    return match["name"], int(match["version"]) if match["version"] else None


def find(owner: int, reference: str) -> PromptTemplate | None:
    """The owner's template version `reference` names, or None."""
    name, version = parse_reference(reference)
    query = select(PromptTemplate).where(PromptTemplate.user_id == owner, PromptTemplate.name == name)
    if version is not None:
        return db.session.scalar(query.where(PromptTemplate.version == version))
    return db.session.scalar(query.order_by(PromptTemplate.version.desc()).limit(1))


def chosen(owner: int, reference: str | None, variables: dict[str, str] | None,
           system_prompt: str | None) -> tuple[PromptTemplate | None, str | None]:
    """The system prompt a submission asks for: its own, or the named template version filled in, not both."""
    if reference is None:
        if variables:
            raise Refused("invalid_request", "variables are for a prompt_template; none was given")
        return None, system_prompt
    if system_prompt is not None:
        raise Refused("invalid_request", "give system_prompt or prompt_template, not both")
    check_variables(variables or {})
    template = find(owner, reference)
    if template is None:
        raise Refused("unknown_prompt_template", f"no prompt template '{reference}'")
    return template, fill(template, variables or {})


def check_variables(variables: dict[str, str]) -> None:
    if len(variables) > MAX_VARIABLES:
        raise Refused("invalid_request", f"variables: at most {MAX_VARIABLES}")
    for name, value in variables.items():
        if not valid_text(name):  # stored with the job, it would break every page that shows it
            raise Refused("invalid_request", "variables: a name holds a lone surrogate (\\ud800-\\udfff)")
        if not isinstance(value, str) or not valid_text(value) or len(value) > MAX_SYSTEM_PROMPT_CHARS:
            raise Refused("invalid_request", f"variables.{name}: must be text of at most "
                                             f"{MAX_SYSTEM_PROMPT_CHARS} characters")


def latest(owner: int) -> list[PromptTemplate]:
    """The newest version of each of the owner's templates, by name."""
    newest = (select(PromptTemplate.name, func.max(PromptTemplate.version).label("version"))
              .where(PromptTemplate.user_id == owner).group_by(PromptTemplate.name).subquery())
    return list(db.session.scalars(
        select(PromptTemplate)
        .join(newest, (PromptTemplate.name == newest.c.name) & (PromptTemplate.version == newest.c.version))
        .where(PromptTemplate.user_id == owner).order_by(PromptTemplate.name)))


def every_version(owner: int) -> list[PromptTemplate]:
    """Every version of each of the owner's templates, by name, newest first: what the chat form offers."""
    return list(db.session.scalars(select(PromptTemplate).where(PromptTemplate.user_id == owner)
                                   .order_by(PromptTemplate.name, PromptTemplate.version.desc())))


def reference(template: PromptTemplate) -> str:
    """How a form names this version again: by its name while it is the latest (so the choice follows a new version),
    else `name@version`."""
    latest = find(template.user_id, template.name)
    return template.name if latest is not None and latest.version == template.version else template.ref


def history(owner: int, name: str) -> list[PromptTemplate]:
    """Every version of the owner's template `name`, newest first; empty when there is none."""
    return list(db.session.scalars(select(PromptTemplate).where(
        PromptTemplate.user_id == owner, PromptTemplate.name == name).order_by(PromptTemplate.version.desc())))


def save(owner: int, name: str, text: str) -> tuple[PromptTemplate, bool]:
    """Version 1 of a new template, or the next version of an existing one; saving the latest text again adds
    nothing. Returns the version and whether it is new."""
    if not NAME.fullmatch(name):
        raise Refused("invalid_request", f"name must be {NAME_RULE}")
    check_placeholder_count(len(PLACEHOLDER.findall(text)), "the text")
    current = find(owner, name)
    if current is not None and current.text == text:
        return current, False
    template = PromptTemplate(user_id=owner, name=name, text=text, version=current.version + 1 if current else 1)
    db.session.add(template)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise Refused("edit_conflict", f"prompt template '{name}' was saved by another request at the same "
                                       "moment; load it and save again", status=409) from None
    return template, True


def template_json(template: PromptTemplate, versions: list[PromptTemplate] | None = None) -> dict:
    found = {"name": template.name, "version": template.version, "reference": template.ref, "text": template.text,
             "variables": template.variables, "created_at": iso(template.created_at)}
    if versions is not None:
        found["versions"] = [{"version": each.version, "created_at": iso(each.created_at)} for each in versions]
    return found
