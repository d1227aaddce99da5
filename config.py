"""Settings: defaults < config.json (path in LLAMALITH_CONFIG) < environment, validated once at start-up.

A bad setting must stop the process with one line naming it, so every error raised here is a
`ConfigError` whose message says which setting (environment variable or config key) is wrong.
"""

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from app.llm.bundled import BUNDLED
from app.llm.settings import MODEL_VARIABLES, GenerationParams, ModelSettings, Strict, model_variable

ROOT = Path(__file__).resolve().parent
POSTGRES_SCHEMES = ("postgresql", "postgres")  # DATABASE_URL schemes served by psycopg 3
DEFAULT_MODEL_KEY = BUNDLED[0].key
# The forwarding headers waitress can take from a trusted proxy (Forwarded alone, or any of the X-Forwarded-* ones).
ProxyHeader = Literal["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port",
                      "x-forwarded-by", "forwarded"]


class ConfigError(Exception):
    """A setting is wrong; the message names it and fits on one line."""


class Settings(Strict):
    secret_key: str | None = None
    admin_password_hash: str | None = None  # bcrypt hash; lets a user named "admin" log in (original setup)
    login_attempts: int = Field(5, ge=1)  # sign-in attempts per name per window (a success clears it), then 429
    login_attempts_per_address: int = Field(30, ge=1)  # sign-in attempts per client address per window, then 429
    login_window: int = Field(300, ge=1)  # seconds
    secure_cookies: bool = False  # set when users reach the UI over HTTPS
    trust_proxy: bool = False  # take the client's address and scheme from trusted_proxy's X-Forwarded-* headers
    trusted_proxy: str = "127.0.0.1"  # the proxy's address as the web process sees it ("*": any peer), with trust_proxy
    trusted_proxy_count: int = Field(1, ge=1)  # proxies in a chain in front of the web process, each adding its hop
    trusted_proxy_headers: list[ProxyHeader] = Field(
        default_factory=lambda: ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"])
    development: bool = False
    base_path: str = "/chat"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    instance_path: Path = ROOT / "instance"
    redis_url: str | None = None
    database_url: str | None = None
    models: dict[str, ModelSettings]
    llm_models: list[str] = Field(default_factory=list)
    generation: GenerationParams = Field(default_factory=GenerationParams)
    safety_margin: int = Field(64, ge=0)
    threads: int | None = Field(None, ge=1)  # llama.cpp threads for models without their own n_threads
    max_loaded_models: int = Field(2, ge=1)
    kv_cache_mb: int = Field(256, ge=0)  # per worker: conversations' KV states kept between turns; 0 turns it off
    job_timeout: int = Field(600, ge=1)
    max_queue_wait: int = Field(24 * 3600, ge=1)
    max_attempts: int = Field(3, ge=1)
    batch_aging: int = Field(120, ge=1)
    reconcile_interval: float = Field(10, gt=0, le=60)
    max_request_bytes: int = Field(1024 * 1024, ge=1024)
    import_max_bytes: int = Field(4 * 1024 * 1024, ge=1024)  # a conversation file to import (the request)
    batch_file_max_bytes: int = Field(50 * 1024 * 1024, ge=1024)  # an uploaded batch input file (the request)
    batch_lines_queued: int = Field(2, ge=1)  # of each key's batch lines, how many wait in Redis at a time
    # waitress threads; each open event stream holds one. An idle thread costs no CPU and little memory, so there
    # are enough for 40 streams (room for bench/streams.py's 32) with 8 left for ordinary requests.
    web_threads: int = Field(48, ge=8, le=1000)
    sse_max_streams: int = Field(40, ge=1)  # open event streams per web process, at most web_threads - 4
    sse_max_streams_per_key: int = Field(8, ge=1)
    sse_max_streams_per_user: int | None = Field(None, ge=1)  # None: a quarter of sse_max_streams (at least 1)
    max_keys_per_user: int = Field(20, ge=1)  # API keys one user may have
    api_rate_limit: int = Field(600, ge=0)  # requests per API key per minute (a key's own --rate-limit wins); 0: unlimited
    callback_allowed_hosts: list[str] = Field(default_factory=list)  # host or host:port webhooks may be sent to
    callback_max_attempts: int = Field(8, ge=1, le=20)  # delivery attempts before a webhook counts as failed
    callback_timeout: float = Field(10, gt=0, le=120)  # seconds for a delivery: connect, send, the first line back
    cors_origins: list[str] = Field(default_factory=list)  # exact origins that may call /api and /v1 from a browser
    api_auth_failures: int = Field(20, ge=1)  # requests with a wrong key per address per 5 minutes, then 429
    max_queued_per_key: int = Field(1000, ge=1)  # jobs one key may have waiting (a key's own --max-queued wins)
    log_format: Literal["json", "text"] | None = None  # None: text on a terminal, JSON lines otherwise
    metrics_token: str | None = None  # when set, GET /metrics needs it as a bearer token

    @model_validator(mode="after")
    def _streams_leave_threads_free(self) -> "Settings":
        if self.sse_max_streams > self.web_threads - 4:
            raise ValueError(f"sse_max_streams ({self.sse_max_streams}) must leave at least 4 of the "
                             f"{self.web_threads} web threads for other requests")
        return self

    @field_validator("cors_origins")
    @classmethod
    def _exact_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?", origin):
                raise ValueError(f"'{origin}' is not an exact origin like 'https://app.example.com' (no wildcards, "
                                 "no path)")
        return origins

    @field_validator("trusted_proxy_headers", mode="before")
    @classmethod
    def _header_names_any_case(cls, names: Any) -> Any:
        names = [str(name).lower() for name in names] if isinstance(names, list) else names
        if "forwarded" in names and len(set(names)) > 1:
            raise ValueError("'forwarded' is taken alone, not with the X-Forwarded-* headers")
        return names

    @field_validator("base_path")
    @classmethod
    def _normalise_base_path(cls, value: str) -> str:
        return "/" + value.strip("/") if value.strip("/") else ""

    @property
    def offered_models(self) -> list[str]:
        return self.llm_models or list(self.models)

    @property
    def streams_per_user(self) -> int:
        """One user, however many keys they make, may hold only part of a web process's reader slots."""
        return self.sse_max_streams_per_user or max(1, self.sse_max_streams // 4)

    @property
    def default_model(self) -> str:
        return self.offered_models[0]

    def params_for(self, model: str, overrides: dict[str, Any] | None = None) -> GenerationParams:
        """Global defaults < the model's defaults < a request's overrides."""
        return GenerationParams(**(self.generation.model_dump() | self.models[model].params | (overrides or {})))

    @property
    def models_folder(self) -> Path:
        """Where `make setup` assembles the bundled models."""
        return self.instance_path / "models"

    @property
    def embedded_redis_socket(self) -> Path:
        return self.instance_path / "redis.sock"

    @property
    def redis_address(self) -> str:
        return self.redis_url or f"unix://{self.embedded_redis_socket}"

    @property
    def database_address(self) -> str:
        """DATABASE_URL as SQLAlchemy takes it. To SQLAlchemy, PostgreSQL's own form (postgresql://, and
        postgres:// from hosting providers) means psycopg2; the driver installed is psycopg 3."""
        if not self.database_url:
            return f"sqlite:///{self.instance_path / 'llamalith.db'}"
        scheme, separator, rest = self.database_url.partition("://")
        return f"postgresql+psycopg://{rest}" if separator and scheme in POSTGRES_SCHEMES else self.database_url

    @property
    def secret_key_file(self) -> Path:
        return self.instance_path / "secret_key"


# Environment variable -> dotted setting. The LLM_* names are the original project's and must keep working.
ENVIRONMENT = {
    "SECRET_KEY": "secret_key",
    "ADMIN_PASSWORD_HASH": "admin_password_hash",
    "LOGIN_ATTEMPTS": "login_attempts",
    "LOGIN_WINDOW": "login_window",
    "LOGIN_ATTEMPTS_PER_ADDRESS": "login_attempts_per_address",
    "SECURE_COOKIES": "secure_cookies",
    "TRUST_PROXY": "trust_proxy",
    "TRUSTED_PROXY": "trusted_proxy",
    "TRUSTED_PROXY_COUNT": "trusted_proxy_count",
    "TRUSTED_PROXY_HEADERS": "trusted_proxy_headers",
    "LLAMALITH_DEVELOPMENT": "development",
    "BASE_PATH": "base_path",
    "HOST": "host",
    "PORT": "port",
    "LLAMALITH_INSTANCE": "instance_path",
    "REDIS_URL": "redis_url",
    "DATABASE_URL": "database_url",
    "LLM_MODELS": "llm_models",
    "LLM_MAX_TOKENS": "generation.max_tokens",
    "LLM_TEMP": "generation.temperature",
    "LLM_TOP_P": "generation.top_p",
    "LLM_TOP_K": "generation.top_k",
    "LLM_REPEAT_PENALTY": "generation.repeat_penalty",
    "LLM_MIROS": "generation.mirostat_mode",
    "LLM_MIROS_TAU": "generation.mirostat_tau",
    "LLM_MIROS_ETA": "generation.mirostat_eta",
    "LLM_SAFETY_MARGIN": "safety_margin",
    "LLM_THREADS": "threads",
    "LLM_MAX_LOADED_MODELS": "max_loaded_models",
    "KV_CACHE_MB": "kv_cache_mb",
    "JOB_TIMEOUT": "job_timeout",
    "MAX_QUEUE_WAIT": "max_queue_wait",
    "MAX_ATTEMPTS": "max_attempts",
    "BATCH_AGING": "batch_aging",
    "RECONCILE_INTERVAL": "reconcile_interval",
    "MAX_REQUEST_BYTES": "max_request_bytes",
    "IMPORT_MAX_BYTES": "import_max_bytes",
    "BATCH_FILE_MAX_BYTES": "batch_file_max_bytes",
    "BATCH_LINES_QUEUED": "batch_lines_queued",
    "WEB_THREADS": "web_threads",
    "SSE_MAX_STREAMS": "sse_max_streams",
    "SSE_MAX_STREAMS_PER_KEY": "sse_max_streams_per_key",
    "SSE_MAX_STREAMS_PER_USER": "sse_max_streams_per_user",
    "MAX_KEYS_PER_USER": "max_keys_per_user",
    "API_RATE_LIMIT": "api_rate_limit",
    "API_AUTH_FAILURES": "api_auth_failures",
    "CORS_ORIGINS": "cors_origins",
    "CALLBACK_ALLOWED_HOSTS": "callback_allowed_hosts",
    "CALLBACK_MAX_ATTEMPTS": "callback_max_attempts",
    "CALLBACK_TIMEOUT": "callback_timeout",
    "MAX_QUEUED_PER_KEY": "max_queued_per_key",
    "LOG_FORMAT": "log_format",
    "METRICS_TOKEN": "metrics_token",
}


def load_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from defaults, the config file, the environment, then `overrides` (tests)."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    config_path = environ.get("LLAMALITH_CONFIG")
    if config_path:
        _merge_config_file(Path(config_path), values, origin)
    _merge_environment(environ, values, origin)
    for key, value in overrides.items():
        _set(values, key, value)
        origin[key] = key
    _add_models(environ, values, origin)
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None
    _check_offered_models(settings, origin)
    _check_secret_key(settings)
    _check_database_driver(settings, origin)
    return settings


def _merge_config_file(path: Path, values: dict, origin: dict) -> None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"LLAMALITH_CONFIG: cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"LLAMALITH_CONFIG: {path} must hold a JSON object")
    # The original format: {"model_paths": {"mistral": "models/x.gguf"}}.
    legacy = data.pop("model_paths", {})
    models = data.setdefault("models", {})
    if not isinstance(legacy, dict) or not isinstance(models, dict):
        raise ConfigError(f"{path}: 'model_paths' and 'models' must be objects keyed by model name")
    for key, model_path in legacy.items():
        models.setdefault(key, {"path": model_path})
    for key, model in models.items():
        if isinstance(model, dict) and "path" in model:
            model["path"] = _resolve(model["path"], path.parent)
    for key, value in data.items():
        values[key] = value
        origin[key] = f"{path} key '{key}'"


def _merge_environment(environ: dict, values: dict, origin: dict) -> None:
    for name, dotted in ENVIRONMENT.items():
        if environ.get(name, "") == "":
            continue
        value: Any = environ[name]
        if dotted in ("llm_models", "cors_origins", "callback_allowed_hosts", "trusted_proxy_headers"):
            value = [key.strip() for key in value.split(",") if key.strip()]
        _set(values, dotted, value)
        origin[dotted] = f"environment variable {name}"


def _add_models(environ: dict, values: dict, origin: dict) -> None:
    """Without models in a config file, the bundled models are configured (all, or those LLM_MODELS names).
    <KEY>_PATH, <KEY>_CHAT_FORMAT and <KEY>_SYSTEM_PROMPT set a model's fields, or configure a new one."""
    models = values.setdefault("models", {})
    from_file = bool(models)
    folder = Path(values.get("instance_path") or ROOT / "instance") / "models"
    keys = values.get("llm_models") or ([] if from_file else [model.key for model in BUNDLED])
    for key in dict.fromkeys([*models, *keys]):
        model = models.get(key, {})
        bundled = next((m for m in BUNDLED if m.key == key), None)
        if bundled and not from_file:
            model = {"path": folder / bundled.file, "description": bundled.description,
                     "chat_format": bundled.chat_format, "system_prompt": bundled.system_prompt,
                     "params": dict(bundled.params)}
            origin[f"models.{key}"] = f"the bundled model (run 'make setup' to assemble it into {folder})"
        for suffix, field in MODEL_VARIABLES.items():
            variable = model_variable(key, suffix)
            if environ.get(variable) and isinstance(model, dict):
                value = environ[variable]
                model[field] = _resolve(value, Path.cwd()) if field == "path" else value
                origin[f"models.{key}.{field}"] = f"environment variable {variable}"
                origin.setdefault(f"models.{key}", f"environment variable {variable}")
        if model:
            models[key] = model


def _check_offered_models(settings: Settings, origin: dict) -> None:
    for key in settings.llm_models:
        if key not in settings.models:
            raise ConfigError(
                f"{origin.get('llm_models', 'LLM_MODELS')} names model '{key}', which is not configured "
                f"(set {model_variable(key, 'PATH')} or add it to the config file)"
            )


def _check_database_driver(settings: Settings, origin: dict) -> None:
    """Said here in one line, not in a traceback at the first connection (or as flask's "No such command 'db'",
    which is how `flask db` reports that the app could not be made)."""
    if not settings.database_url:
        return
    where = origin.get("database_url", "DATABASE_URL")
    scheme = settings.database_url.partition("://")[0]
    try:
        make_url(settings.database_address).get_dialect().import_dbapi()
    except NoSuchModuleError:  # an ArgumentError too, so first
        raise ConfigError(f"{where}: no database is known by the URL scheme '{scheme}' (use postgresql:// or "
                          "sqlite:///)") from None
    except ArgumentError:
        raise ConfigError(f"{where} is not a database URL like postgresql://user:password@host/llamalith") from None
    except ImportError as exc:
        raise ConfigError(f"{where}: the URL scheme '{scheme}' needs the Python module '{exc.name}', which is not "
                          "installed: install the driver package that provides it into the virtualenv, or use "
                          "postgresql:// for the installed psycopg 3") from None


def _check_secret_key(settings: Settings) -> None:
    if settings.secret_key:
        return
    if settings.secret_key_file.is_file():
        settings.secret_key = settings.secret_key_file.read_text().strip()
    elif not settings.development:
        raise ConfigError(
            f"SECRET_KEY is not set and {settings.secret_key_file} does not exist "
            "(run 'make setup' or set SECRET_KEY; LLAMALITH_DEVELOPMENT=1 allows a throwaway key)"
        )
    else:
        settings.secret_key = os.urandom(32).hex()


def _resolve(value: Any, base: Path) -> Any:
    return str(base / Path(value).expanduser()) if isinstance(value, str) else value


def _set(values: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        values = values.setdefault(part, {})
    values[leaf] = value


def _describe(exc: ValidationError, origin: dict) -> str:
    error = exc.errors()[0]
    loc = ".".join(str(part) for part in error["loc"])
    source = next((origin[k] for k in sorted(origin, key=len, reverse=True) if loc.startswith(k)), None)
    where = f"{loc} (from {source})" if source else loc or "settings"
    value = error.get("input")
    shown = f" = {value!r}" if isinstance(value, (str, int, float)) else ""
    message = error["msg"].removeprefix("Value error, ")
    return f"invalid setting {where}{shown}: {message}"
