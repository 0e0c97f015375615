"""A data dir through configuration changes, with the real workflow on the emulator: what
`features.enabled: false` and another base `interval` leave behind is removed by the next
`all` (rule remove_leftovers), nothing else is, and turning back rebuilds it."""

from __future__ import annotations

import pytest
from crypto_lakehouse_emulator.__main__ import synthetic_rest

from crypto_lakehouse import duckdb_connect, load_features, load_klines
from crypto_lakehouse.loading import DataNotFoundError
from tests.e2e.e2e_helpers import REPO, emulator_config, snakemake

pytestmark = [pytest.mark.e2e]

MIRROR = REPO / "tests/fixtures/legacy-v1-real/mirror"


def _views(data) -> set[str]:
    """The DuckDB views over the data dir (none at all: an empty set)."""
    try:
        con = duckdb_connect(data)
    except DataNotFoundError:
        return set()
    return {
        r[0]
        for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    }


def _files(data, folder):
    root = data / folder
    return (
        sorted(p.relative_to(data).as_posix() for p in root.rglob("*.pqt")) if root.exists() else []
    )


def test_features_off_and_another_interval_leave_nothing_stale(emulator, tmp_path):
    emu = emulator(mirror_dir=MIRROR, rest=synthetic_rest({"spot": {"BTCUSDT"}}, MIRROR))
    data = tmp_path / "data"

    def run(*targets, **overrides):
        config = emulator_config(
            emu.base_url, data, trade_types=["spot"], symbols={"spot": ["BTCUSDT"]},
            start_date="2020-01-01", end_date="2020-01-03",
            resample={"targets": [{"trade_type": "spot", "interval": "1h", "offset_step": "30m"}]},
            **overrides,
        )  # fmt: skip
        return snakemake(tmp_path, config, *targets)

    run("all")
    features = [
        "results_data/spot/features/1m/BTCUSDT.pqt",
        "results_data/spot/resampled_features/1h/0m/BTCUSDT.pqt",
        "results_data/spot/resampled_features/1h/30m/BTCUSDT.pqt",
    ]
    assert (
        _files(data, "results_data/spot/features")
        + _files(data, "results_data/spot/resampled_features")
        == features
    )
    klines = _files(data, "results_data/spot/klines") + _files(
        data, "results_data/spot/resampled_klines"
    )
    parsed = _files(data, "parsed_data")
    assert load_features(data, "spot", "BTCUSDT").shape[0] > 0

    # Features off: the next `all` removes them; the candles stay.
    proc = run("all", features={"enabled": False})
    assert "target all removes the 3 feature file(s) of spot's symbols" in proc.stderr
    assert not any((data / f).exists() for f in features)
    with pytest.raises(DataNotFoundError):
        load_features(data, "spot", "BTCUSDT")
    assert "features" not in _views(data) and "klines" in _views(data)
    assert (
        _files(data, "results_data/spot/klines")
        + _files(data, "results_data/spot/resampled_klines")
        == klines
    )
    # `snakemake features` still builds them (the removal made its shards run again) ...
    proc = run("features", features={"enabled": False})
    assert all((data / f).exists() for f in features)
    assert "this run removes" not in proc.stderr  # only target all removes them
    # ... and with features enabled again, `all` keeps them.
    run("all")
    assert all((data / f).exists() for f in features)

    # Another base interval: the 1m generated candles and features go, the sources stay.
    proc = run("all", interval="5m")
    assert "interval: the base interval is 5m; target all removes" in proc.stderr
    assert _files(data, "results_data/spot/klines") == []
    assert not (data / features[0]).exists()
    with pytest.raises(DataNotFoundError):
        load_klines(data, "spot", "BTCUSDT", interval="1m")
    if "klines" in _views(data):  # none at 5m: the mirror has no 5m archive
        con = duckdb_connect(data)
        assert con.execute("SELECT count(*) FROM klines WHERE interval = '1m'").fetchone() == (0,)
    assert _files(data, "parsed_data") == parsed
    assert (data / "lakehouse/quality/spot/1m/BTCUSDT.pqt").exists()
    # Back to 1m: rebuilt from the sources, without a new download.
    proc = run("all")
    assert _files(data, "results_data/spot/klines") == ["results_data/spot/klines/1m/BTCUSDT.pqt"]
    assert all((data / f).exists() for f in features)
    assert load_klines(data, "spot", "BTCUSDT").shape[0] > 0
