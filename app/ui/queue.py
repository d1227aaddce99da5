"""The Queue page: what waits and runs on each model, each worker's state and the last hour's charts
(app/queue_board.py), refreshed in place every few seconds; the charts are drawn here as SVG paths."""

from dataclasses import dataclass

from flask import render_template

from app import queue_board
from app.models import Job
from app.ui import bp, visible, wants_fragment

WIDTH, HEIGHT = 300, 60  # the charts' SVG viewBox


@dataclass
class Chart:
    title: str
    unit: str
    digits: int  # shown after the decimal point
    lines: list[tuple[str, list[float | None]]]  # (name, one value a minute)

    @property
    def top(self) -> float:
        return max((value for _, values in self.lines for value in values if value is not None), default=0)

    @property
    def now(self) -> list[tuple[str, float | None]]:
        """Each line's newest value."""
        return [(name, next((v for v in reversed(values) if v is not None), None)) for name, values in self.lines]

    def path(self, values: list[float | None]) -> str:
        """An SVG path through the values, broken where a minute has none; scaled so the top value fills it."""
        scale, step = (HEIGHT - 4) / (self.top or 1), WIDTH / (len(values) - 1)
        moves, drawing = [], False
        for n, value in enumerate(values):
            if value is None:
                drawing = False
                continue
            # a segment starts with a dot (a zero-length stroke, round-capped), so a lone minute shows too
            point = f"{n * step:.1f} {HEIGHT - 2 - value * scale:.1f}"
            moves.append(f"L{point}" if drawing else f"M{point} l0 0")
            drawing = True
        return " ".join(moves)


def charts(hour: queue_board.Hour) -> list[Chart]:
    return [Chart("Tokens per second", "tok/s", 1, [("all models", hour.tokens_per_second)]),
            Chart("Jobs waiting", "jobs", 0, [("all models", hour.waiting)]),
            Chart("Time to first token", "s", 2, [("p50", hour.first_token_p50), ("p95", hour.first_token_p95)])]


@bp.get("/queue")
def queue():
    board = queue_board.board(visible(Job.user_id))
    template = "partials/_queue_board.html" if wants_fragment() else "queue.html"
    return render_template(template, board=board, charts=charts(board.hour), size=(WIDTH, HEIGHT))
