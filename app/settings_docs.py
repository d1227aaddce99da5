"""docs/configuration.md's settings table, made from config.Settings' fields so the doc cannot drift from the code:
`python -m app.settings_docs` rewrites it, tests/test_config.py fails when it is stale."""

from collections.abc import Iterator

from pydantic.fields import FieldInfo

from app.settings_sources import declared
from config import ROOT, Settings

DOC = ROOT / "docs" / "configuration.md"
BEGIN = "<!-- made from config.py's fields by `.venv/bin/python -m app.settings_docs`: edit them, not this table -->"
END = "<!-- end of the settings table -->"
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


def table() -> str:
    lines = ["| environment | config key | default | meaning |", "|---|---|---|---|"]
    for env, key, field in rows():
        lines.append(f"| {f'`{env}`' if env else 'none'} | `{key}` | {_default(field)} | {_meaning(field)} |")
    return "\n".join(lines)


def updated(text: str) -> str:
    """`text` with the table between its markers made anew."""
    head, begin, rest = text.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not (begin and end):
        raise ValueError(f"{DOC} lacks the settings table's markers")
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def _default(field: FieldInfo) -> str:
    if declared(field, "shown_default"):
        return declared(field, "shown_default")
    value = field.get_default(call_default_factory=True)
    if value is None or value == []:
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
