"""The click log (`query, item, rank, click[, propensity]`, CSV or Parquet) and a new ranking policy's file
(`query, item, rank`), read into integer arrays with every bad row refused by file and row.

A log has no session column in its contract: a session (one query shown once, its results at ranks 1, 2, ...)
is a run of consecutive rows of one query whose ranks increase.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unforced.errors import UnforcedError
from unforced.observation.tables import read_columns, write_columns

COLUMNS = ("query", "item", "rank", "click")


@dataclass
class ClickLog:
    """One row per shown result; `query`, `item` and `session` are codes (indices into the label arrays)."""

    query: np.ndarray  # (rows,) int64 codes into query_labels
    item: np.ndarray  # (rows,) int64 codes into item_labels
    rank: np.ndarray  # (rows,) int64, 1 = top
    click: np.ndarray  # (rows,) float64, 0 or 1
    propensity: np.ndarray | None  # (rows,) float64 in (0, 1], the examination probability, where logged
    session: np.ndarray  # (rows,) int64, 0 .. sessions - 1
    query_labels: np.ndarray
    item_labels: np.ndarray

    @property
    def rows(self) -> int:
        return len(self.rank)

    @property
    def sessions(self) -> int:
        return int(self.session[-1]) + 1 if self.rows else 0

    @property
    def depth(self) -> int:
        return int(self.rank.max()) if self.rows else 0


def sessions_from_order(query: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Session ids from the row order: a new session where the query changes or the rank does not increase."""
    start = np.ones(len(rank), dtype=bool)
    start[1:] = (query[1:] != query[:-1]) | (rank[1:] <= rank[:-1])
    return np.cumsum(start) - 1


def read_log(path: str | Path) -> ClickLog:
    """A click log, checked: ranks positive integers, clicks 0 or 1, propensities in (0, 1], no empty cell."""
    columns = read_columns(path)
    columns.require(COLUMNS)
    rank = columns.integers("rank", minimum=1, what="a positive integer")
    click = columns.numbers("click")
    columns.refuse("click", (click != 0) & (click != 1), "0 or 1")
    propensity = None
    if columns.has("propensity"):
        propensity = columns.numbers("propensity")
        columns.refuse("propensity", ~((propensity > 0) & (propensity <= 1)), "in (0, 1] (the chance the row "
                       "was examined)")
    query, query_labels = columns.codes("query")
    item, item_labels = columns.codes("item")
    session = sessions_from_order(query, rank)
    return ClickLog(query=query, item=item, rank=rank, click=click, propensity=propensity, session=session,
                    query_labels=query_labels, item_labels=item_labels)


def write_log(path: str | Path, log: ClickLog, with_propensity: bool = True) -> Path:
    columns = {"query": log.query_labels[log.query], "item": log.item_labels[log.item], "rank": log.rank,
               "click": log.click.astype(np.int64)}
    if with_propensity and log.propensity is not None:
        columns["propensity"] = log.propensity
    return write_columns(path, columns)


def read_policy(path: str | Path, log: ClickLog) -> np.ndarray:
    """The rank a new policy gives each row of `log` (its `query, item, rank` file): (rows,) int64, 0 where the
    policy does not rank that query's item (not shown)."""
    columns = read_columns(path)
    columns.require(("query", "item", "rank"))
    rank = columns.integers("rank", minimum=1, what="a positive integer")
    query, query_labels = columns.codes("query")
    item, item_labels = columns.codes("item")
    # Map the policy's labels onto the log's codes; a label the log never saw gets -1.
    query_map = _lookup(query_labels, log.query_labels)
    item_map = _lookup(item_labels, log.item_labels)
    keys = query_map[query] * len(log.item_labels) + item_map[item]
    known = (query_map[query] >= 0) & (item_map[item] >= 0)
    keys, rank = keys[known], rank[known]
    order = np.argsort(keys, kind="stable")
    keys, rank = keys[order], rank[order]
    duplicate = np.flatnonzero(keys[1:] == keys[:-1])
    if len(duplicate):
        raise UnforcedError(f"{columns.path}: ranks one query's item twice "
                            f"(query {query_labels[query[known][order][duplicate[0]]]!s})")
    wanted = log.query * len(log.item_labels) + log.item
    where = np.searchsorted(keys, wanted)
    where = np.minimum(where, max(len(keys) - 1, 0))
    found = (keys[where] == wanted) if len(keys) else np.zeros(len(wanted), dtype=bool)
    return np.where(found, rank[where] if len(keys) else 0, 0).astype(np.int64)


def _lookup(labels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Index of each label in `reference` (labels as strings), -1 where absent."""
    if labels.dtype.kind not in "iu" or reference.dtype.kind not in "iu":
        labels, reference = labels.astype(str), reference.astype(str)
    order = np.argsort(reference)
    sorted_reference = reference[order]
    where = np.minimum(np.searchsorted(sorted_reference, labels), max(len(reference) - 1, 0))
    return np.where(sorted_reference[where] == labels, order[where], -1)


def write_policy(path: str | Path, query_labels: np.ndarray, item_labels: np.ndarray, rank: np.ndarray) -> Path:
    return write_columns(path, {"query": np.asarray(query_labels), "item": np.asarray(item_labels),
                                "rank": np.asarray(rank, dtype=np.int64)})
