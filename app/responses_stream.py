"""The Responses API's stream (`/v1/responses` with `stream: true`): the events a job's answer becomes, in OpenAI's
names and shapes, each with its `sequence_number` (the objects they carry are app/responses_format.py's)."""

from app import tool_calls
from app.models import Job
from app.responses_format import message_item, output_text, response_object


class Events:
    """A response's stream, event by event, each with its `type` and the next `sequence_number`. The message item
    opens with its first text: with tools offered, the answer may be a call instead (held back by the face until
    the end, then told as a `function_call` item)."""

    def __init__(self, job: Job, echo: dict, tools: list[tool_calls.Tool]):
        self.job, self.echo, self.tools, self.number, self.text, self.opened = job, echo, tools, 0, "", False
        self.item = {"item_id": f"msg_{job.id}", "output_index": 0, "content_index": 0}

    def event(self, kind: str, **fields) -> dict:
        self.number += 1
        return {"type": kind, "sequence_number": self.number - 1, **fields}

    def opening(self) -> list[dict]:
        started = response_object(self.job, "in_progress", **self.echo)
        return [self.event("response.created", response=started), self.event("response.in_progress", response=started)]

    def delta(self, text: str) -> list[dict]:
        self.text += text
        return [*self._open(), self.event("response.output_text.delta", **self.item, delta=text, logprobs=[])]

    def ending(self, job: Job) -> list[dict]:
        """The closing events of a job that ended: its text, part and item done (or its call's item added, its
        arguments, the item done), then the response completed (or incomplete: it ran out of max_output_tokens),
        or failed."""
        finished = response_object(job, callable_tools=self.tools, **self.echo)
        if finished["status"] not in ("completed", "incomplete"):
            return [self.event("response.failed", response=finished)]
        if finished["output"][0]["type"] == "function_call":
            return [*self._called(finished["output"][0]), self.event("response.completed", response=finished)]
        text, status = job.result or self.text, finished["output"][0]["status"]
        return [*self._open(), self.event("response.output_text.done", **self.item, text=text, logprobs=[]),
                self.event("response.content_part.done", **self.item, part=output_text(text)),
                self.event("response.output_item.done", output_index=0, item=message_item(job, text, status)),
                self.event(f"response.{finished['status']}", response=finished)]

    def error(self, message: str, code: str) -> dict:
        return self.event("error", code=code, message=message, param=None)

    def _open(self) -> list[dict]:
        if self.opened:
            return []
        self.opened = True
        return [self.event("response.output_item.added", output_index=0,
                           item=message_item(self.job, None, "in_progress")),
                self.event("response.content_part.added", **self.item, part=output_text(""))]

    def _called(self, item: dict) -> list[dict]:
        where = {"item_id": item["id"], "output_index": 0}
        return [self.event("response.output_item.added", output_index=0, item={**item, "arguments": "",
                                                                              "status": "in_progress"}),
                self.event("response.function_call_arguments.delta", **where, delta=item["arguments"]),
                self.event("response.function_call_arguments.done", **where, arguments=item["arguments"]),
                self.event("response.output_item.done", output_index=0, item=item)]
