"""A paginator for tables too big to count on every page view.

``SELECT COUNT(*)`` reads the whole table (PostgreSQL keeps no row count), which on a million jobs
takes longer than the rest of the page. Unfiltered on PostgreSQL, the planner's own estimate
(``pg_class.reltuples``) stands in; otherwise rows are counted up to ``cap`` and no further.
"""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Model, QuerySet
from django.utils.functional import cached_property

DEFAULT_CAP = 10_000


def estimated_rows(model: type[Model], using: str) -> int | None:
    """The planner's estimate of the table's rows on PostgreSQL; None elsewhere or when the
    table has never been analyzed (``reltuples`` is then -1, or 0 before PostgreSQL 14)."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return None
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [table]
        )
        row = cursor.fetchone()
    if row is None or row[0] is None or row[0] <= 0:
        return None
    return int(row[0])


class EstimatedCountPaginator(Paginator):
    """Counts exactly up to ``cap`` rows; past that, ``count`` is an estimate or the cap, and
    ``count_is_exact`` is False so templates can say "about" or "more than"."""

    cap = DEFAULT_CAP

    def __init__(self, object_list: Any, per_page: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(object_list, per_page, *args, **kwargs)
        self.count_is_exact = True
        self.count_is_capped = False

    @cached_property
    def count(self) -> int:
        rows = self.object_list
        if not isinstance(rows, QuerySet):
            return super().count
        if not rows.query.has_filters():
            estimate = estimated_rows(rows.model, rows.db)
            # A small table is cheap to count; the estimate is only worth its error on a big one.
            if estimate is not None and estimate > self.cap:
                self.count_is_exact = False
                return estimate
        counted = rows.order_by()[: self.cap + 1].count()
        if counted > self.cap:
            self.count_is_exact = False
            self.count_is_capped = True
            return self.cap
        return counted
