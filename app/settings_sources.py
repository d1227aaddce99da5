"""Where settings come from: the config file (LLAMALITH_CONFIG), the environment variable named on each field, and
the models those two and the bundled models configure, each remembering which setting came from where.

`setting()` declares a field's environment variable; `Environment`, a pydantic-settings source, reads it. The names
are written on the fields rather than derived from the field names, as pydantic-settings would: the original
project's (LLM_TEMP for generation.temperature, ...) must keep working.
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_origin

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from app.llm.bundled import BUNDLED
from app.llm.settings import MODEL_VARIABLES, model_variable


class ConfigError(Exception):
    """A setting is wrong; the message names it and fits on one line."""


def setting(default: Any = PydanticUndefined, *, env: str | dict[str, str] | None, description: str,
            shown_default: str | None = None, secret: bool = False, **field: Any) -> Any:
    """A settings field: its default, the environment variable that sets it (for a nested model, one per field of
    it), what it means to a user, and how docs/configuration.md shows the default where the value would not say it
    (None meaning "the embedded Redis", a path inside this checkout). A secret's value is left out of the settings'
    repr and of error messages: URLs carry passwords."""
    extra = {"env": env, "secret": secret} | ({"shown_default": shown_default} if shown_default else {})
    return Field(default, description=description, json_schema_extra=extra, repr=not secret, **field)


def declared(field: FieldInfo, key: str) -> Any:
    """What a field declares beyond pydantic: `setting()`'s "env", "secret" and "shown_default" (ModelSettings'
    fields write their "shown_default" themselves)."""
    return (field.json_schema_extra or {}).get(key)  # type: ignore[union-attr]


class Environment(PydanticBaseSettingsSource):
    """The variables named by the fields, from `environ` (the process's, or a test's). An empty variable counts as
    unset (a compose file's `FOO=`); lists are comma-separated (`LLM_MODELS=a,b`), not JSON."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self.environ = {name: value for name, value in environ.items() if value != ""}
        self.origins: dict[str, str] = {}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        names = declared(field, "env")
        if isinstance(names, dict):
            found = {key: self.environ[name] for key, name in names.items() if name in self.environ}
            self.origins |= {f"{field_name}.{key}": f"environment variable {names[key]}" for key in found}
            return found or None, field_name, True
        if names in self.environ:
            self.origins[field_name] = f"environment variable {names}"
            return self.environ[names], field_name, False
        return None, field_name, False

    def prepare_field_value(self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool) -> Any:
        if isinstance(value, str) and get_origin(field.annotation) is list:
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    def __call__(self) -> dict[str, Any]:
        values = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, is_complex = self.get_field_value(field, name)
            if value is not None:
                values[key] = self.prepare_field_value(name, field, value, is_complex)
        return values


class ConfigFile(PydanticBaseSettingsSource):
    """A JSON object keyed by the fields' names. Model paths are relative to the file; the original format,
    {"model_paths": {"mistral": "models/x.gguf"}}, still works."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | None) -> None:
        super().__init__(settings_cls)
        self.data = self._read(Path(path)) if path else {}
        self.origins = {key: f"{path} key '{key}'" for key in self.data}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        """The file whole, not field by field as get_field_value would: unknown keys too, so validation refuses
        them by name."""
        return dict(self.data)

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"LLAMALITH_CONFIG: cannot read {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"LLAMALITH_CONFIG: {path} must hold a JSON object")
        legacy = data.pop("model_paths", {})
        models = data.setdefault("models", {})
        if not isinstance(legacy, dict) or not isinstance(models, dict):
            raise ConfigError(f"{path}: 'model_paths' and 'models' must be objects keyed by model name")
        for key, model_path in legacy.items():
            models.setdefault(key, {"path": model_path})
        for model in models.values():
            if isinstance(model, dict) and "path" in model:
                model["path"] = _resolve(model["path"], path.parent)
        return data


def add_models(values: dict, environ: Mapping[str, str], default_instance: Path) -> dict[str, str]:
    """Without models in a config file, the bundled models are configured (all, or those LLM_MODELS names).
    <KEY>_PATH, <KEY>_CHAT_FORMAT and <KEY>_SYSTEM_PROMPT set a model's fields, or configure a new one. Which
    variables count depends on the keys the other sources name, so this runs after them. Returns the origins."""
    origins: dict[str, str] = {}
    models = values.setdefault("models", {})
    from_file = bool(models)
    folder = Path(values.get("instance_path") or default_instance) / "models"
    keys = values.get("llm_models") or ([] if from_file else [model.key for model in BUNDLED])
    for key in dict.fromkeys([*models, *keys]):
        model = models.get(key, {})
        bundled = next((m for m in BUNDLED if m.key == key), None)
        if bundled and not from_file:
            model = {"path": folder / bundled.file, "description": bundled.description,
                     "chat_format": bundled.chat_format, "system_prompt": bundled.system_prompt,
                     "params": dict(bundled.params)}
            origins[f"models.{key}"] = f"the bundled model (run 'make setup' to assemble it into {folder})"
        for suffix, field in MODEL_VARIABLES.items():
            variable = model_variable(key, suffix)
            if environ.get(variable) and isinstance(model, dict):
                value = environ[variable]
                model[field] = _resolve(value, Path.cwd()) if field == "path" else value
                origins[f"models.{key}.{field}"] = f"environment variable {variable}"
                origins.setdefault(f"models.{key}", f"environment variable {variable}")
        if model:
            models[key] = model
    return origins


def merged(low: dict, high: dict) -> dict:
    """`high` over `low`, key by key inside nested objects too (a file's generation.top_k survives LLM_TEMP)."""
    result = dict(low)
    for key, value in high.items():
        both = isinstance(value, dict) and isinstance(result.get(key), dict)
        result[key] = merged(result[key], value) if both else value
    return result


def _resolve(value: Any, base: Path) -> Any:
    return str(base / Path(value).expanduser()) if isinstance(value, str) else value
