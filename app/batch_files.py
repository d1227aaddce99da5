"""Reading a batch's input file: every line checked as POST /v1/chat/completions checks a request (through the one
submit path's checks, app/intake.py), every problem reported with its line number, and the checked lines ready to be
stored as jobs (app/batches.py stores them)."""

from dataclasses import dataclass

from app import intake, strict_json, submissions
from app.errors import APIError
from app.models import Batch
from app.openai_format import parse_chat_request, submission

MAX_LINES = 50_000
MAX_ERRORS = 100  # a file with more bad lines reports the first ones


@dataclass
class Line:
    """A checked line of an input file, ready to be a job: its columns, and its conversation's session id."""

    custom_id: str
    job: dict
    session_id: str


def request_count(content: bytes) -> int:
    """How many requests a file holds (its lines that are not blank), counted without parsing any."""
    return sum(1 for row in content.splitlines() if row.strip())


def read_lines(content: bytes, batch: Batch, api_key) -> tuple[list[Line], list[dict]]:
    """Every line checked as /v1/chat/completions checks a request, and every problem with its line number; a file
    over MAX_LINES is refused before any line is parsed."""
    try:
        content.decode()
    except UnicodeDecodeError:
        return [], [line_error(None, "invalid_file", "the file is not UTF-8 text")]
    numbered = [(number, row) for number, row in enumerate(content.splitlines(), 1) if row.strip()]
    if not numbered:
        return [], [line_error(None, "empty_file", "the file has no requests")]
    if len(numbered) > MAX_LINES:
        return [], [too_many(len(numbered))]
    lines, errors, seen = [], [], set()
    for number, row in numbered:
        try:
            line = read_line(number, row, batch, api_key)
        except APIError as refused:
            errors.append(line_error(number, refused.code, refused.message, refused.param))
            continue
        if line.custom_id in seen:
            errors.append(line_error(number, "duplicate_custom_id", f"custom_id '{line.custom_id}' is used by an "
                                                                "earlier line", "custom_id"))
        seen.add(line.custom_id)
        lines.append(line)
    return lines, errors


def too_many(count: int) -> dict:
    return line_error(None, "too_many_requests", f"the file has {count} requests; at most {MAX_LINES}")


def read_line(number: int, row: bytes, batch: Batch, api_key) -> Line:
    try:
        request = strict_json.loads(row)
    except (ValueError, RecursionError):
        raise APIError(400, "invalid_json", "the line is not valid JSON") from None
    if not isinstance(request, dict):
        raise APIError(400, "invalid_request", "the line must be a JSON object")
    unknown = sorted(request.keys() - {"custom_id", "method", "url", "body"})
    if unknown:
        raise APIError(400, "invalid_request", f"unknown field '{unknown[0]}'", param=unknown[0])
    custom_id = request.get("custom_id")
    if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= 512 or not submissions.valid_text(custom_id):
        raise APIError(400, "invalid_request", "custom_id must be text of 1-512 characters", param="custom_id")
    if request.get("method") != "POST":
        raise APIError(400, "invalid_request", "method must be 'POST'", param="method")
    if request.get("url") != batch.endpoint:
        raise APIError(400, "invalid_request", f"url must be the batch's endpoint, '{batch.endpoint}'", param="url")
    job, session_id = _job_for(request.get("body"), number, batch, api_key)
    return Line(custom_id, {**job, "custom_id": custom_id}, session_id)


def _job_for(body, number: int, batch: Batch, api_key) -> tuple[dict, str]:
    """The line's request as the columns of a (not yet stored) job, checked as /v1/chat/completions checks one (the
    lines are stored together, so only the checks of the one submit path apply: app/intake.py), and its
    conversation's session id."""
    try:
        chat = parse_chat_request(body)
        if chat.stream:
            raise APIError(400, "invalid_request", "stream is not available in a batch", param="stream")
        if chat.tools:  # a line's output is written from its job alone, which does not keep the tools offered
            raise APIError(400, "unsupported_parameter", "tools are not available in a batch", param="tools")
        session_id = chat.user if chat.user and submissions.valid_session_id(chat.user) else f"{batch.id}-{number}"
        line = submission(chat, api_key.user_id, session_id, api_key=api_key)
        ready = intake.check(line)
    except (APIError, submissions.Refused) as refused:
        param = f"body.{refused.param}" if refused.param else "body"
        raise APIError(refused.status, refused.code, f"body: {refused.message}", param=param) from None
    job = dict(user_input=line.user_input, model=ready.model, system_prompt=ready.system_prompt, params=line.params,
               priority=line.priority, api_key_id=api_key.id, history=line.history, batch_id=batch.id)
    return job, session_id


def line_error(line: int | None, code: str, message: str, param: str | None = None) -> dict:
    """An entry of a batch's `errors` list (OpenAI's shape, without a status); `line` None for the file as a whole."""
    return {"code": code, "message": message, "param": param, "line": line}
