"""The OpenAI-compatible face (`/v1`): the same API keys as Bearer tokens, the same queue and workers; requests and
answers in OpenAI's wire format, so the `openai` SDKs, LangChain and n8n's OpenAI nodes work unmodified."""

from flask import Blueprint

from app.keys import require_key

bp = Blueprint("v1", __name__)
bp.before_request(lambda: require_key("invalid_api_key"))


from app.v1 import batches, completions, embeddings, responses, routes  # noqa: E402,F401  (register their routes on bp)
