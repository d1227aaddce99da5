"""Newest-first lists in pages, without counting the whole table: one extra row says whether there is more."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flask import request
from sqlalchemy import Select


MAX_PAGE = 1_000_000  # deeper pages are empty anyway; the limit keeps the offset a number the database takes


@dataclass
class Page:
    items: list
    number: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1


def paginate(results: Callable[[Select], Sequence], query: Select, per_page: int) -> Page:
    """`results` runs the query: `db.session.scalars` for one entity per row, `db.session.execute` for tuples."""
    number = min(max(request.args.get("page", 1, type=int), 1), MAX_PAGE)
    items = list(results(query.limit(per_page + 1).offset((number - 1) * per_page)))
    return Page(items[:per_page], number, len(items) > per_page)
