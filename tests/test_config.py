"""Settings: defaults < config.json < environment, and one clear line for each bad setting."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from app import settings_docs
from config import ROOT, ConfigError, load_settings
from tests.stack import MODEL_PATHS

BASE = {"SECRET_KEY": "x"}
MODEL_PATH = Path(MODEL_PATHS["SMOLLM2_135M_PATH"])


def test_defaults_serve_the_bundled_models_smollm2_first(tmp_path):
    settings = load_settings({**BASE, "LLAMALITH_INSTANCE": str(ROOT / "instance")})
    assert settings.offered_models == ["smollm2-135m", "gemma3-270m"]
    smollm2, gemma = settings.models["smollm2-135m"], settings.models["gemma3-270m"]
    assert smollm2.chat_format is None and smollm2.system_prompt and "chat model" in smollm2.description
    assert gemma.chat_format == "gemma" and gemma.system_prompt is None and "base model" in gemma.description
    assert (settings.base_path, settings.host, settings.port) == ("/chat", "127.0.0.1", 8000)
    assert settings.redis_address == f"unix://{ROOT / 'instance' / 'redis.sock'}"


def test_a_model_from_the_environment_alone_with_its_chat_format_and_system_prompt(tmp_path):
    settings = load_settings({**BASE, "LLM_MODELS": "mythomax,smollm2-135m", "MYTHOMAX_PATH": str(MODEL_PATH),
                              "MYTHOMAX_CHAT_FORMAT": "alpaca", "MYTHOMAX_SYSTEM_PROMPT": "Be terse.",
                              "SMOLLM2_135M_SYSTEM_PROMPT": "Talk like a pirate.", **MODEL_PATHS})
    assert settings.offered_models == ["mythomax", "smollm2-135m"] and set(settings.models) == set(settings.offered_models)
    assert (settings.models["mythomax"].chat_format, settings.models["mythomax"].system_prompt) == ("alpaca", "Be terse.")
    assert settings.models["smollm2-135m"].system_prompt == "Talk like a pirate."


def test_original_config_file_format(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_paths": {"mistral": str(MODEL_PATH), "mythomax": str(MODEL_PATH)}}))
    settings = load_settings({**BASE, "LLAMALITH_CONFIG": str(config), "LLM_MODELS": "mistral,mythomax"})
    assert settings.offered_models == ["mistral", "mythomax"]
    assert settings.models["mistral"].path == MODEL_PATH


def test_config_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "x.gguf").write_bytes(b"GGUF")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_paths": {"mistral": "models/x.gguf"}}))
    assert load_settings({**BASE, "LLAMALITH_CONFIG": str(config)}).models["mistral"].path == tmp_path / "models/x.gguf"


def test_richer_model_form_and_environment_wins(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({
        "models": {"tiny": {"path": str(MODEL_PATH), "chat_format": "gemma", "n_ctx": 2048,
                            "params": {"temperature": 0.2}}},
        "base_path": "/llm", "generation": {"top_k": 10},
    }))
    settings = load_settings({**BASE, "LLAMALITH_CONFIG": str(config), "BASE_PATH": "/x/", "LLM_TOP_K": "7"})
    assert settings.models["tiny"].n_ctx == 2048 and settings.models["tiny"].params == {"temperature": 0.2}
    assert settings.base_path == "/x" and settings.generation.top_k == 7


def test_per_model_environment_paths(tmp_path):
    settings = load_settings({**BASE, "LLM_MODELS": "mistral", "MISTRAL_PATH": str(MODEL_PATH), "LLM_TEMP": "0.3",
                              "LLM_MIROS": "2", "LLM_MIROS_TAU": "4", "LLM_MIROS_ETA": "0.2",
                              "LLM_SAFETY_MARGIN": "32", "LLM_TOP_P": "0.5", "LLM_REPEAT_PENALTY": "1.2"})
    assert settings.models["mistral"].path == MODEL_PATH
    generation = settings.generation
    assert (generation.temperature, generation.mirostat_mode, generation.mirostat_tau, generation.mirostat_eta,
            generation.top_p, generation.repeat_penalty) == (0.3, 2, 4, 0.2, 0.5, 1.2)
    assert settings.safety_margin == 32


@pytest.mark.parametrize("environ, config, named", [
    ({"LLM_TEMP": "hot"}, None, "LLM_TEMP"),
    ({"LLM_MIROS": "3"}, None, "LLM_MIROS"),
    ({"PORT": "0"}, None, "PORT"),
    ({"LLM_MODELS": "mistral"}, None, "LLM_MODELS"),
    ({"LLM_MODELS": "mistral", "MISTRAL_PATH": "/nope/x.gguf"}, None, "MISTRAL_PATH"),
    ({}, {"model_paths": {"mistral": "/nope/x.gguf"}}, "models.mistral.path"),
    ({}, {"colour": "blue"}, "colour"),
    ({}, {"models": {"m": {"path": str(MODEL_PATH), "n_ctx": "big"}}}, "models.m.n_ctx"),
    ({}, {"models": {"m": {"path": str(MODEL_PATH), "params": {"temprature": 1}}}}, "temprature"),
    ({"LLM_MODELS": "ghost"}, {"model_paths": {"mistral": str(MODEL_PATH)}}, "ghost"),
])
def test_bad_settings_name_themselves(tmp_path, environ, config, named):
    environ = {**BASE, **environ}
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
        environ["LLAMALITH_CONFIG"] = str(tmp_path / "config.json")
    with pytest.raises(ConfigError) as error:
        load_settings(environ)
    assert named in str(error.value) and "\n" not in str(error.value)


def test_secrets_stay_out_of_errors_and_the_settings_repr(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"metrics_token": 271828182}))
    with pytest.raises(ConfigError, match="metrics_token") as error:
        load_settings({**BASE, "LLAMALITH_CONFIG": str(config), **MODEL_PATHS})
    assert "271828182" not in str(error.value)
    settings = load_settings({"SECRET_KEY": "s3cret-key", "DATABASE_URL": "postgresql://u:pa55word@h/db",
                              "REDIS_URL": "redis://:pa55word@h:6379/0", **MODEL_PATHS})
    assert "s3cret-key" not in repr(settings) and "pa55word" not in repr(settings)


def test_only_the_given_environment_counts_and_an_empty_variable_is_unset(monkeypatch):
    monkeypatch.setenv("PORT", "9999")
    settings = load_settings({**BASE, "HOST": "", "LLM_TEMP": "", **MODEL_PATHS})
    assert (settings.port, settings.host, settings.generation.temperature) == (8000, "127.0.0.1", 0.8)


def test_the_tables_in_the_docs_are_made_from_the_fields():
    """Each setting's environment variable, default and meaning are written once, on its field in config.py (a
    model's, in app/llm/settings.py)."""
    doc = settings_docs.DOC.read_text()
    assert settings_docs.updated(doc) == doc, "docs/configuration.md is stale: run .venv/bin/python -m app.settings_docs"
    assert "| `LLM_TEMP` | `generation.temperature` | `0.8` |" in doc and "| `PORT` | `port` | `8000` |" in doc
    assert "| `n_ctx` | `4096` |" in doc


def test_missing_secret_key_stops_outside_development(tmp_path):
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_settings({"LLAMALITH_INSTANCE": str(tmp_path), **MODEL_PATHS})
    assert load_settings({"LLAMALITH_INSTANCE": str(tmp_path), **MODEL_PATHS,
                          "LLAMALITH_DEVELOPMENT": "1"}).secret_key


@pytest.mark.slow
@pytest.mark.parametrize("command", [["wsgi.py"], ["worker.py"], ["-m", "flask", "--app", "wsgi", "keys", "list"]])
def test_processes_exit_with_one_line(tmp_path, command):
    environ = {"PATH": "/usr/bin:/bin", "SECRET_KEY": "x", "LLAMALITH_INSTANCE": str(tmp_path), "LLM_TEMP": "hot",
               **MODEL_PATHS}
    result = subprocess.run([sys.executable, *command], env=environ, cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "llamalith: invalid setting generation.temperature (from environment variable LLM_TEMP) = 'hot': "
        "Input should be a valid number, unable to parse string as a number"
    ]


def test_https_and_proxy_settings_reach_the_app(tmp_path):
    from app import create_app, serving

    settings = load_settings({**BASE, "LLAMALITH_INSTANCE": str(tmp_path), **MODEL_PATHS,
                              "SECURE_COOKIES": "1", "TRUST_PROXY": "1"})
    app = create_app(settings)
    assert app.config["SESSION_COOKIE_SECURE"] and app.config["REMEMBER_COOKIE_SECURE"]
    assert app.config["SESSION_COOKIE_PATH"] == "/chat"
    options = serving.waitress_options(app, 4096)  # waitress takes X-Forwarded-* from the proxy on loopback only
    assert (options["trusted_proxy"], options["trusted_proxy_count"], options["trusted_proxy_headers"]) == (
        "127.0.0.1", 1, {"x-forwarded-for", "x-forwarded-host", "x-forwarded-proto"})


@pytest.mark.parametrize("url", ["postgresql://user:pw@db-host:5432/llamalith", "postgres://user:pw@db-host/llamalith",
                                 "postgresql+psycopg://user:pw@db-host/llamalith"])
def test_postgresql_urls_as_postgresql_hands_them_out_use_psycopg_3(url):
    assert load_settings({**BASE, "DATABASE_URL": url, **MODEL_PATHS}).database_address.startswith(
        "postgresql+psycopg://user:pw@db-host")


@pytest.mark.parametrize("url, named", [("postgresql+psycopg2://u:secret@h/db", "psycopg2"),
                                        ("mysql://u:secret@h/db", "MySQLdb"),
                                        ("nosuchdb://u:secret@h/db", "nosuchdb"),
                                        ("not a url", "not a database URL")])
def test_a_database_url_without_its_driver_is_one_line_naming_what_to_install(url, named):
    with pytest.raises(ConfigError) as error:
        load_settings({**BASE, "DATABASE_URL": url, **MODEL_PATHS})
    message = str(error.value)
    assert "DATABASE_URL" in message and named in message and "secret" not in message and "\n" not in message


@pytest.mark.slow
def test_flask_db_and_the_web_process_take_a_postgresql_url(tmp_path, postgres_url, redis_url):
    """The form PostgreSQL's own docs use: the migrations run, a key is made, and a started web process reaches the
    database (/readyz names no database problem; no worker runs here) and answers with that key."""
    from tests.stack import free_port, wait_for

    url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    port = free_port()
    environ = {"PATH": "/usr/bin:/bin", "SECRET_KEY": "x", "LLAMALITH_INSTANCE": str(tmp_path), "DATABASE_URL": url,
               "REDIS_URL": redis_url, "PORT": str(port), **MODEL_PATHS}

    def flask(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], env=environ, cwd=ROOT,
                              input=stdin, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    flask("db", "upgrade")
    flask("users", "create", "admin", "--admin", "--password-stdin", stdin="correct horse battery\n")
    key = flask("keys", "create", "pg").strip().splitlines()[-1]
    web = subprocess.Popen([sys.executable, "wsgi.py"], env=environ, cwd=ROOT, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    ready = f"http://127.0.0.1:{port}/chat/readyz"
    try:
        wait_for(lambda: requests.get(ready, timeout=5).status_code, timeout=60)  # 503 without a worker
        assert "the database cannot be reached" not in requests.get(ready, timeout=5).json().get("problems", [])
        jobs = requests.get(f"http://127.0.0.1:{port}/chat/api/jobs", headers={"Authorization": f"Bearer {key}"},
                            timeout=5)
        assert jobs.status_code == 200 and jobs.json() == {"jobs": []}
    finally:
        web.terminate()
        web.wait(timeout=30)
