"""The OpenAI-compatible face (`/v1`): the same API keys as Bearer tokens, the same queue and workers; requests and
answers in OpenAI's wire format, so the `openai` SDKs, LangChain and n8n's OpenAI nodes work unmodified."""

from flask import Blueprint, g

from app.errors import APIError
from app.keys import KeyRefused, authenticate

bp = Blueprint("v1", __name__)


@bp.before_request
def require_api_key() -> None:
    try:
        g.api_key = authenticate()
    except KeyRefused as refused:
        headers = {"Retry-After": str(refused.retry_after)} if refused.retry_after else None
        code = "invalid_api_key" if refused.status == 401 else refused.code
        raise APIError(refused.status, code, refused.message, headers=headers) from None


from app.v1 import routes  # noqa: E402,F401  (registers the routes on bp)
