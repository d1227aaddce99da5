"""Settings: defaults < config.json (path in LLAMALITH_CONFIG) < environment, validated once at start-up.

Each setting is one field: its environment variable, default and meaning, from which docs/configuration.md's table
is made (`python -m app.settings_docs`). A bad setting must stop the process with one line naming it, so every error
raised here is a `ConfigError` whose message says which setting (environment variable or config key) is wrong.
"""

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from app.llm.bundled import BUNDLED
from app.llm.settings import GenerationParams, ModelSettings, model_variable
from app.settings_sources import ConfigError, ConfigFile, Environment, add_models, declared, merged, setting

ROOT = Path(__file__).resolve().parent
POSTGRES_SCHEMES = ("postgresql", "postgres")  # DATABASE_URL schemes served by psycopg 3
DEFAULT_MODEL_KEY = BUNDLED[0].key
# The forwarding headers waitress can take from a trusted proxy (Forwarded alone, or any of the X-Forwarded-* ones).
ProxyHeader = Literal["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port",
                      "x-forwarded-by", "forwarded"]


class Settings(BaseSettings):
    """Every setting, in the order docs/configuration.md lists them; `load_settings` fills them."""

    model_config = SettingsConfigDict(extra="forbid", validate_assignment=True)

    secret_key: str | None = setting(
        None, env="SECRET_KEY", secret=True, shown_default="`instance/secret_key` (made by `make setup`)",
        description="signs sessions; required unless `LLAMALITH_DEVELOPMENT=1`")
    development: bool = setting(False, env="LLAMALITH_DEVELOPMENT", description="allows a throwaway secret key")
    admin_password_hash: str | None = setting(
        None, env="ADMIN_PASSWORD_HASH", secret=True,
        description="bcrypt hash that lets the user `admin` log in (the original project's setup)")
    login_attempts: int = setting(5, env="LOGIN_ATTEMPTS", ge=1, description=(
        "sign-in attempts per name per `LOGIN_WINDOW`, then 429; a successful sign-in clears the count"))
    login_window: int = setting(300, env="LOGIN_WINDOW", ge=1, description="seconds over which sign-ins are counted")
    login_attempts_per_address: int = setting(30, env="LOGIN_ATTEMPTS_PER_ADDRESS", ge=1, description=(
        "sign-in attempts per client address per `LOGIN_WINDOW`, then 429"))
    secure_cookies: bool = setting(False, env="SECURE_COOKIES", description=(
        "mark session cookies Secure; set it when the UI is served over HTTPS"))
    trust_proxy: bool = setting(False, env="TRUST_PROXY", description=(
        "behind a reverse proxy (nginx): take the client's address, scheme and host from the `X-Forwarded-*` "
        "headers of requests from `TRUSTED_PROXY`, so login throttling sees real clients and cookies are Secure "
        "over https; without it waitress drops those headers"))
    trusted_proxy: str = setting("127.0.0.1", env="TRUSTED_PROXY", description=(
        "with `TRUST_PROXY`: the proxy's address as the web process sees it; `*`: any peer (only if nothing else "
        "can reach the port)"))
    trusted_proxy_count: int = setting(1, env="TRUSTED_PROXY_COUNT", ge=1, description=(
        "with `TRUST_PROXY`: how many proxies in a chain each add an address to `X-Forwarded-For`"))
    trusted_proxy_headers: list[ProxyHeader] = setting(
        ["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"], env="TRUSTED_PROXY_HEADERS", description=(
            "with `TRUST_PROXY`: the headers taken from the proxy, comma-separated: any of those and "
            "`x-forwarded-port`, `x-forwarded-by`, or `forwarded` alone"))
    base_path: str = setting("/chat", env="BASE_PATH", description="URL prefix of everything")
    host: str = setting("127.0.0.1", env="HOST", description="the address the web process listens on")
    port: int = setting(8000, env="PORT", ge=1, le=65535, description="the port the web process listens on")
    instance_path: Path = setting(ROOT / "instance", env="LLAMALITH_INSTANCE", shown_default="`instance/`",
                                  description="database, embedded Redis, models, secret key")
    redis_url: str | None = setting(
        None, env="REDIS_URL", secret=True, shown_default="the embedded Redis, `unix://instance/redis.sock`",
        description="e.g. `redis://10.0.0.5:6379/0`")
    database_url: str | None = setting(None, env="DATABASE_URL", secret=True,
                                       shown_default="`sqlite:///instance/llamalith.db`", description=(
        "e.g. `postgresql://user@host/llamalith`; `postgresql://`, `postgres://` and `postgresql+psycopg://` all "
        "use psycopg 3 (the installed driver); a URL whose driver is not installed stops the process with one line "
        "naming its scheme"))
    models: dict[str, ModelSettings] = setting(env=None, shown_default="the bundled models", description=(
        "the models, by key: see Models above; `<KEY>_PATH`, `<KEY>_CHAT_FORMAT`, `<KEY>_SYSTEM_PROMPT`, "
        "`<KEY>_PARALLEL` and `<KEY>_EMBEDDINGS` set a model's fields"))
    llm_models: list[str] = setting([], env="LLM_MODELS", shown_default="every configured model",
                                    description="offered model keys, comma-separated; the first is the default")
    generation: GenerationParams = setting(
        default_factory=GenerationParams,
        env={"max_tokens": "LLM_MAX_TOKENS", "temperature": "LLM_TEMP", "top_p": "LLM_TOP_P", "top_k": "LLM_TOP_K",
             "repeat_penalty": "LLM_REPEAT_PENALTY", "mirostat_mode": "LLM_MIROS", "mirostat_tau": "LLM_MIROS_TAU",
             "mirostat_eta": "LLM_MIROS_ETA"},  # the original project's names, which must keep working
        description="generation defaults for every model, under a model's `params` and a request's fields")
    safety_margin: int = setting(64, env="LLM_SAFETY_MARGIN", ge=0, description=(
        "tokens kept free besides `max_tokens` when fitting history"))
    threads: int | None = setting(None, env="LLM_THREADS", ge=1, shown_default="number of CPUs", description=(
        "llama.cpp threads per worker (a model's own `n_threads` wins); with several workers on one machine, give "
        "each cores / workers: llama.cpp threads spin while they wait, so oversubscribed cores make every worker "
        "many times slower"))
    parallel: int = setting(4, env="LLM_PARALLEL", ge=1, le=64, description=(
        "jobs a worker runs at once per model, decoded together (continuous batching, docs/batching.md); a model's "
        "own `parallel` wins. They share the model's `n_ctx` cells and one copy of its weights"))
    parallel_exact: bool = setting(False, env="LLM_PARALLEL_EXACT", description=(
        "give each sequence `n_ctx` KV cells of its own, attention without flash attention, and read each prompt "
        "chunk alone: greedy answers as one at a time (SmolLM2: 8 of 8; not with repacked quants such as Gemma's), "
        "for `parallel` times the KV memory, and a decoding job's next token may wait for a whole prompt chunk "
        "(docs/batching.md)"))
    max_loaded_models: int = setting(2, env="LLM_MAX_LOADED_MODELS", ge=1,
                                     description="models a worker keeps loaded (LRU)")
    kv_cache_mb: int = setting(256, env="KV_CACHE_MB", ge=0, description=(
        "per worker: conversations' KV states kept between turns (about 23 kB a token for SmolLM2 135M), least "
        "recently used dropped first; `0` turns it off"))
    job_timeout: int = setting(600, env="JOB_TIMEOUT", ge=1, description=(
        "seconds of generation before a job ends as `error`/`timeout` (text kept)"))
    max_queue_wait: int = setting(24 * 3600, env="MAX_QUEUE_WAIT", ge=1, description=(
        "seconds a job may wait in the queue (a batch's lines wait as long as its window allows instead)"))
    max_attempts: int = setting(3, env="MAX_ATTEMPTS", ge=1, description=(
        "runs of a job interrupted by infrastructure before it fails"))
    batch_aging: int = setting(120, env="BATCH_AGING", ge=1, description=(
        "seconds after which a batch job counts as interactive (not the lines of a batch file: they take turns per "
        "key instead)"))
    batch_lines_queued: int = setting(2, env="BATCH_LINES_QUEUED", ge=1, description=(
        "of each key's batch lines (docs/batch.md), how many wait in the queue at a time; the rest wait in the "
        "database for their key's turn"))
    reconcile_interval: float = setting(10, env="RECONCILE_INTERVAL", gt=0, le=60, description=(
        "seconds between a worker's repairs of the queue from the database"))
    api_rate_limit: int = setting(600, env="API_RATE_LIMIT", ge=0, description=(
        "API requests per key per minute (then `429 rate_limited` with `Retry-After`); `0` turns it off; a key's "
        "own `--rate-limit` wins"))
    callback_allowed_hosts: list[str] = setting([], env="CALLBACK_ALLOWED_HOSTS", description=(
        "hosts (`host` or `host:port`, comma-separated) webhooks may be sent to; an internal address must be "
        "listed itself"))
    callback_max_attempts: int = setting(8, env="CALLBACK_MAX_ATTEMPTS", ge=1, le=20, description=(
        "webhook delivery attempts (2, 4, 8, ... s apart) before it counts as failed"))
    callback_timeout: float = setting(10, env="CALLBACK_TIMEOUT", gt=0, le=120, description=(
        "seconds a webhook delivery may take in all (connecting, sending, the receiver's status line); longer "
        "counts as a failed attempt"))
    cors_origins: list[str] = setting([], env="CORS_ORIGINS", description=(
        "exact origins (`https://tools.example.com`, comma-separated; no wildcards) whose browser pages may call "
        "`/api` and `/v1`"))
    api_auth_failures: int = setting(20, env="API_AUTH_FAILURES", ge=1, description=(
        "requests with a wrong key per client address per 5 minutes, then 429"))
    max_queued_per_key: int = setting(1000, env="MAX_QUEUED_PER_KEY", ge=1, description=(
        "jobs one key may have waiting (then `429 too_many_queued`, exact under concurrent submits); a key's own "
        "`--max-queued` wins"))
    max_request_bytes: int = setting(1024 * 1024, env="MAX_REQUEST_BYTES", ge=1024, description=(
        "larger request bodies get 413, refused before they are read (imports and batch files have their own "
        "limits)"))
    import_max_bytes: int = setting(4 * 1024 * 1024, env="IMPORT_MAX_BYTES", ge=1024, description=(
        "a conversation import (`POST /api/conversations/import`, the UI's upload) may be this large; larger ones "
        "get `413 too_large`, refused before they are read"))
    batch_file_max_bytes: int = setting(50 * 1024 * 1024, env="BATCH_FILE_MAX_BYTES", ge=1024, description=(
        "an uploaded batch input file (`POST /v1/files`) may be this large; larger ones get `413 file_too_large`, "
        "refused before they are read"))
    metrics_token: str | None = setting(None, env="METRICS_TOKEN", secret=True, description=(
        "when set, `GET /metrics` needs it as a bearer token"))
    log_format: Literal["json", "text"] | None = setting(
        None, env="LOG_FORMAT", shown_default="text on a terminal, else `json`", description=(
            "`json`: one JSON object per line (`time`, `level`, `logger`, `message`, `request_id`); `text`: one "
            "readable line. `make run` in a terminal picks `text`"))
    # Each open event stream holds a waitress thread. An idle thread costs no CPU and little memory, so there are
    # enough for 40 streams (room for bench/streams.py's 32) with 8 left for ordinary requests.
    web_processes: int = setting(2, env="WEB_PROCESSES", ge=1, le=64, description=(
        "web processes sharing the port, each with `WEB_THREADS` threads: more than one takes the web tier past what "
        "one Python process can do (one per core; docs/deployment.md)"))
    web_threads: int = setting(48, env="WEB_THREADS", ge=8, le=1000, description=(
        "waitress threads per web process; each open event stream holds one (an idle thread costs no CPU)"))
    sse_max_streams: int = setting(40, env="SSE_MAX_STREAMS", ge=1, description=(
        "open event streams per web process (at most `WEB_THREADS` - 4), then `429 too_many_streams`"))
    sse_max_streams_per_key: int = setting(8, env="SSE_MAX_STREAMS_PER_KEY", ge=1, description=(
        "open event streams per key, over all web processes, then `429 too_many_streams`"))
    sse_max_streams_per_user: int | None = setting(
        None, env="SSE_MAX_STREAMS_PER_USER", ge=1, shown_default="a quarter of `SSE_MAX_STREAMS` (10)", description=(
            "open event streams (and `/v1` calls waiting for their answer) per user, over all their keys and all "
            "web processes, then `429 too_many_streams`"))
    max_keys_per_user: int = setting(20, env="MAX_KEYS_PER_USER", ge=1, description=(
        "API keys one user may have; creating one more (UI, `keys create`) is refused until one is revoked"))

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only what it is given: `load_settings` layers the file and the environment itself, because which
        per-model variables count depends on the models the layers name (and tests pass their own environment)."""
        return (init_settings,)

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


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Build the settings from defaults, the config file, then the environment (os.environ, or a test's)."""
    environ = dict(os.environ if environ is None else environ)
    config_file = ConfigFile(Settings, environ.get("LLAMALITH_CONFIG"))
    environment = Environment(Settings, environ)
    values = merged(config_file(), environment())
    origin = config_file.origins | environment.origins
    origin |= add_models(values, environ, Settings.model_fields["instance_path"].default)
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, origin)) from None
    _check_offered_models(settings, origin)
    _check_secret_key(settings)
    _check_database_driver(settings, origin)
    return settings


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


def _describe(exc: ValidationError, origin: dict) -> str:
    error = exc.errors()[0]
    loc = ".".join(str(part) for part in error["loc"])
    source = next((origin[k] for k in sorted(origin, key=len, reverse=True) if loc.startswith(k)), None)
    where = f"{loc} (from {source})" if source else loc or "settings"
    value = error.get("input")
    field = Settings.model_fields.get(str(error["loc"][0])) if error["loc"] else None
    secret = field is not None and declared(field, "secret")
    shown = f" = {value!r}" if isinstance(value, (str, int, float)) and not secret else ""
    message = error["msg"].removeprefix("Value error, ")
    return f"invalid setting {where}{shown}: {message}"
