"""docs/configuration.md's tables of settings and of a model's fields, made from the fields of config.Settings and
ModelSettings so the doc cannot drift from the code: `python -m app.settings_docs` rewrites them,
tests/test_config.py fails when they are stale."""

from collections.abc import Iterator

from pydantic.fields import FieldInfo

from app.llm.settings import ModelSettings
from app.settings_sources import declared
from config import ROOT, Settings

DOC = ROOT / "docs" / "configuration.md"
END = "<!-- end of the generated table -->"
BOUND_WORDS = {"ge": "at least", "gt": "more than", "le": "at most", "lt": "less than"}


def rows() -> Iterator[tuple[str | None, str, FieldInfo]]:
    """(environment variable, config key, field) for each setting; a nested model's fields each get a row."""
    for name, field in Settings.model_fields.items():
        env = declared(field, "env")
        if isinstance(env, dict):
            for key, inner in field.annotation.model_fields.items():  # type: ignore[union-attr]
                yield env.get(key), f"{name}.{key}", inner
        else:
            yield env, name, field


def settings_table() -> str:
    lines = ["| environment | config key | default | meaning |", "|---|---|---|---|"]
    for env, key, field in rows():
        lines.append(f"| {f'`{env}`' if env else 'none'} | `{key}` | {_default(field)} | {_meaning(field)} |")
    return "\n".join(lines)


def model_table() -> str:
    lines = ["| per-model field | default | meaning |", "|---|---|---|"]
    for name, field in ModelSettings.model_fields.items():
        lines.append(f"| `{name}` | {_default(field)} | {_meaning(field)} |")
    return "\n".join(lines)


# Each table opens with a marker naming where it comes from.
TABLES = {"config.py's Settings": settings_table, "app/llm/settings.py's ModelSettings": model_table}


def begin(source: str) -> str:
    return f"<!-- made from {source} fields by `.venv/bin/python -m app.settings_docs`: edit them, not this table -->"


def updated(text: str) -> str:
    """`text` with each table between its markers made anew."""
    for source, table in TABLES.items():
        head, start, rest = text.partition(begin(source))
        _, end, tail = rest.partition(END)
        if not (start and end):
            raise ValueError(f"{DOC} lacks the markers of the table made from {source}")
        text = f"{head}{start}\n{table()}\n{END}{tail}"
    return text


def _default(field: FieldInfo) -> str:
    if declared(field, "shown_default"):
        return declared(field, "shown_default")
    value = field.get_default(call_default_factory=True)
    if value is None or value in ([], {}):
        return "none"
    if isinstance(value, bool):  # as the environment writes it
        return f"`{int(value)}`"
    return f"`{','.join(value) if isinstance(value, list) else value}`"


def _meaning(field: FieldInfo) -> str:
    limits = {word: getattr(item, word) for item in field.metadata for word in BOUND_WORDS if hasattr(item, word)}
    if {"ge", "le"} <= limits.keys():
        bounds = f"{limits['ge']} to {limits['le']}"
    else:
        bounds = ", ".join(f"{BOUND_WORDS[word]} {limit}" for word, limit in limits.items())
    return f"{field.description}; {bounds}" if bounds else str(field.description)


if __name__ == "__main__":
    DOC.write_text(updated(DOC.read_text()))
