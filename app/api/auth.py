"""Every JSON API request needs an API key (app/keys.py); a refusal is the API's JSON error."""

from flask import g

from app.api import bp
from app.errors import APIError
from app.keys import KeyRefused, authenticate


@bp.before_request
def require_api_key() -> None:
    try:
        g.api_key = authenticate()
    except KeyRefused as refused:
        headers = {"Retry-After": str(refused.retry_after)} if refused.retry_after else None
        raise APIError(refused.status, refused.code, refused.message, headers=headers) from None
