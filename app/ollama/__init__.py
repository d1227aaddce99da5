"""The Ollama-compatible face (`/ollama`): the same API keys as Bearer tokens, the same queue and workers; requests and
answers in Ollama's wire format, so the `ollama` package, n8n's Ollama nodes and other Ollama clients work with a base
URL and a key."""

from flask import Blueprint

from app.keys import require_key

bp = Blueprint("ollama", __name__)
bp.before_request(require_key)
# Errors are Ollama's `{"error": "message"}`: app/errors.py answers in each face's shape.

from app.ollama import embeddings, generation, models  # noqa: E402,F401  (register their routes on bp)
