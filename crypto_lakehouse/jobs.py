"""Rule-level entry points of the CPU stages: resolve what the rule hands over, skip
unchanged symbols (crypto_lakehouse.incremental), then call the stage's logic."""

from __future__ import annotations

from crypto_lakehouse import datasets, layout
from crypto_lakehouse.contracts import contract_size_for
from crypto_lakehouse.incremental import run_unless_unchanged
from crypto_lakehouse.intervals import interval_ms

# Funding events inside a segment's last candle (intervals coarser than an hour, where an
# event need not fall on a candle's open) are joined since 2026-12-06: the marker changes
# the skip fingerprint of those intervals only, so their files are rebuilt once; at 1m … 1h
# nothing changed and nothing reruns.
_FUNDING_IN_LAST_CANDLE = {"funding_join": "in-candle"}


def _gen_inputs(data_dir, trade_type, symbol, interval) -> list:
    return [
        layout.parsed_klines_dir(data_dir, trade_type, symbol, interval),
        layout.api_klines_dir(data_dir, trade_type, symbol, interval),
        layout.parsed_funding_path(data_dir, trade_type, symbol),
        layout.api_funding_path(data_dir, trade_type, symbol),
    ]


def run_gen_kline_rule(
    *,
    report_path,
    stats_path,
    exchange_info=None,
    contract_size_override=None,
    parse_klines=None,
    api_klines=None,
    parse_funding=None,
    api_funding=None,
    **kwargs,
):
    """Rule gen_kline_shard, for one symbol of the shard. The report inputs are dependencies only: the data files are
    read by run_gen_kline itself."""
    from crypto_lakehouse.generate import run_gen_kline

    contract_size = None
    if kwargs["trade_type"] == "cm_futures" and kwargs.get("with_vwap", True):
        contract_size = contract_size_for(exchange_info, kwargs["symbol"], contract_size_override)
    args = dict(kwargs, contract_size=contract_size)
    return run_unless_unchanged(
        stage="gen_kline",
        data_dir=kwargs["data_dir"],
        trade_type=kwargs["trade_type"],
        dataset=datasets.tag(datasets.KLINES.name, kwargs["interval"]),
        symbol=kwargs["symbol"],
        inputs=_gen_inputs(
            kwargs["data_dir"], kwargs["trade_type"], kwargs["symbol"], kwargs["interval"]
        ),
        params=(
            dict(args, **_FUNDING_IN_LAST_CANDLE)
            if interval_ms(kwargs["interval"]) > interval_ms("1h")
            else args
        ),
        output_files=lambda report: [s["file"] for s in report.get("segments", [])],
        report_path=report_path,
        stats_path=stats_path,
        build=lambda: run_gen_kline(
            report_path=report_path, stats_path=stats_path, incremental=True, **args
        ),
    )


def _kept_record(kwargs) -> list[str]:
    """The record of the kept legacy files the loaders warn by (``run_resample`` writes it):
    deleted by hand (the start's check then reruns the job, data_presence), the symbol is
    built again and the record written again, not skipped as unchanged."""
    data_dir = kwargs["data_dir"]
    path = layout.stale_resampled_path(data_dir, kwargs["trade_type"], kwargs["symbol"])
    return [layout.relative_path(data_dir, path)]


def run_resample_rule(*, gen_report, report_path, stats_path, **kwargs):
    """Rule resample_shard, for one symbol: inputs are the segment files the gen_kline report lists."""
    from crypto_lakehouse.resample import run_resample
    from crypto_lakehouse.shards import read_report

    segments = read_report(gen_report, "gen_kline").get("segments", [])
    return run_unless_unchanged(
        stage="resample",
        data_dir=kwargs["data_dir"],
        trade_type=kwargs["trade_type"],
        dataset=datasets.tag(datasets.KLINES.name, kwargs["interval"]),
        symbol=kwargs["symbol"],
        inputs=[gen_report, *(f"{kwargs['data_dir']}/{s['file']}" for s in segments)],
        params=kwargs,
        output_files=lambda report: [o["file"] for o in report.get("outputs", [])],
        records=lambda report: _kept_record(kwargs) if report.get("kept") else [],
        report_path=report_path,
        stats_path=stats_path,
        build=lambda: run_resample(
            gen_report=gen_report,
            report_path=report_path,
            stats_path=stats_path,
            incremental=True,
            **kwargs,
        ),
    )


def run_features_rule(
    *, symbol, gen_report, resample_report=None, contract_size_override=None, **kwargs
):
    """Rule features_shard, for one symbol of the shard: its gen_kline report (and resample
    report when the trade type has resample targets). ``run_features`` keeps the per-symbol
    skip of unchanged inputs."""
    from crypto_lakehouse.features import run_features

    overrides = {symbol: contract_size_override} if contract_size_override is not None else None
    return run_features(
        symbols=[symbol],
        gen_reports=[gen_report],
        resample_reports=[resample_report] if resample_report else [],
        contract_size_overrides=overrides,
        **kwargs,
    )
