"""The SQL of docs/loading.md as written there, run on a small data dir built by the real
jobs (tests/unit/test_loading_features.py), and what the page says of DuckDB itself: the
reserved word ``offset``."""

from __future__ import annotations

import re

import duckdb
import pyarrow.parquet as pq
import pytest

import crypto_lakehouse
from crypto_lakehouse import layout
from tests.conftest import REPO_ROOT
from tests.unit.test_loading_features import OFFSETS, TRADE_TYPE, build_data_dir

PAGE = (REPO_ROOT / "docs" / "loading.md").read_text()
# The queries of the page's Python examples: con.execute("""…""") / con.sql("""…""").
QUERIES = re.findall(r'con\.(?:execute|sql)\(\s*"""(.*?)"""', PAGE, re.S)
SQL_BLOCKS = re.findall(r"```sql\n(.*?)```", PAGE, re.S)
UNQUOTED_OFFSET = re.compile(r'(?<![".\w])offset(?![\w"])', re.I)


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    data = tmp_path_factory.mktemp("loading_docs") / "binance_data"
    build_data_dir(data)
    return crypto_lakehouse.duckdb_connect(data), data


def test_the_page_has_its_queries():
    assert len(QUERIES) >= 4, QUERIES  # klines, resampled_klines, the two feature joins


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: " ".join(q.split())[:60])
def test_every_query_of_the_page_runs_and_finds_rows(con, query):
    connection, _ = con
    assert connection.execute(query).fetchall()  # the filters match the data dir's names


def test_no_query_of_the_page_writes_offset_unquoted():
    for sql in QUERIES + SQL_BLOCKS:
        assert not UNQUOTED_OFFSET.search(sql), sql


def test_offset_unquoted_is_a_parser_error_and_quoted_counts_the_files_rows(con):
    """The page's warning and its query form: ``WHERE offset = '15m'`` does not parse,
    ``WHERE "offset" = '15m'`` counts the rows of the files in the 15m folder (read with
    pyarrow), the column keeps its name."""
    connection, data = con
    documented = [q for q in QUERIES if "resampled_klines" in q and '"offset" =' in q]
    assert documented, "docs/loading.md shows no filter on resampled_klines' offset"
    with pytest.raises(duckdb.ParserException, match='syntax error at or near "offset"'):
        connection.execute("SELECT count(*) FROM resampled_klines WHERE offset = '15m'")
    for offset in OFFSETS:
        folder = layout.resampled_dir(data, TRADE_TYPE, "1h", offset)
        rows = sum(pq.read_metadata(f).num_rows for f in folder.glob("*.pqt"))
        assert rows > 0
        got = connection.execute(
            'SELECT count(*) FROM resampled_klines WHERE "offset" = ?', [offset]
        ).fetchone()
        assert got == (rows,), offset
    names = [c[0] for c in connection.execute("DESCRIBE resampled_klines").fetchall()]
    assert names[:5] == ["trade_type", "interval", "offset", "symbol", "segment"]
