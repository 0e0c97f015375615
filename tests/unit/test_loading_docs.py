"""The SQL of docs/loading.md as written there, run on a small data dir built by the real
jobs (tests/unit/test_loading_features.py), and what the page says of DuckDB itself: the
reserved word ``offset``, the fetch methods of a relation."""

from __future__ import annotations

import re

import duckdb
import pyarrow.parquet as pq
import pytest

import crypto_lakehouse
from crypto_lakehouse import layout
from tests.conftest import REPO_ROOT
from tests.unit.test_loading_datasets import build_dataset_dir
from tests.unit.test_loading_features import OFFSETS, TRADE_TYPE, build_data_dir

PAGE = (REPO_ROOT / "docs" / "loading.md").read_text()
# The queries of the page's Python examples: con.execute("""…""") / con.sql("""…""").
QUERIES = re.findall(r'con\.(?:execute|sql)\(\s*"""(.*?)"""', PAGE, re.S)
SQL_BLOCKS = re.findall(r"```sql\n(.*?)```", PAGE, re.S)
UNQUOTED_OFFSET = re.compile(r'(?<![".\w])offset(?![\w"])', re.I)


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loading_docs")
    data = tmp / "binance_data"
    build_data_dir(data)
    build_dataset_dir(tmp, data)  # the parsed datasets' views (aggTrades, metrics, ...)
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


@pytest.mark.skipif(
    int(duckdb.__version__.split(".")[0]) < 2, reason="DuckDB 1 relations have every fetch"
)
def test_the_fetch_methods_the_page_says_a_relation_lacks_are_the_ones_it_lacks():
    bullet = next(b for b in PAGE.split("\n- ") if "relation" in b and "fetchone()" in b)
    said_missing = re.search(r"(?:has no|no longer have) (.*?):", bullet, re.S).group(1)
    said_missing = set(re.findall(r"`(\w+)\(\)`", said_missing))
    connection = duckdb.connect()
    sql = "SELECT 1 AS x UNION ALL SELECT 2 ORDER BY x"

    def lacks(method: str) -> bool:
        try:
            getattr(connection.sql(sql), method)()
        except AttributeError:
            return True
        return False

    fetch_methods = ("fetchone", "fetchmany", "fetchall", "fetchdf", "fetchnumpy", "df")
    assert said_missing == {m for m in fetch_methods if lacks(m)}
    assert connection.sql(sql).fetchall() == [(1,), (2,)]
    assert connection.sql(sql).limit(1).fetchall() == [(1,)]


@pytest.mark.skipif(
    int(duckdb.__version__.split(".")[0]) < 2, reason="DuckDB 1 has no unfinished results"
)
def test_an_unfinished_execute_result_blocks_relations_as_the_page_says():
    connection = duckdb.connect()
    assert connection.execute("SELECT count(*) FROM range(5)").fetchone() == (5,)
    with pytest.raises(duckdb.ResourceInUseException, match="unfinished result from execute"):
        connection.sql("SELECT 1").fetchall()
    connection.complete()
    assert connection.sql("SELECT 1").fetchall() == [(1,)]
    connection.execute("SELECT count(*) FROM range(5)").fetchone()
    assert connection.execute("SELECT 2").fetchall() == [(2,)]  # a next execute is fine
    assert connection.sql("SELECT 3").fetchall() == [(3,)]  # its result was fetched to the end
