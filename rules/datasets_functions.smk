# Functions of rules/datasets.smk (kept apart from common.smk; they can move there).


def dataset_trade_types():
    """Trade types whose config lists datasets beyond klines and funding."""
    return [t for t in TRADE_TYPES if extra_dataset_tags(t)]


def get_datasets_input(wildcards):
    """The datasets summaries (each needs every parse shard of its trade type's datasets)
    and the candles built from aggTrades (config agg_klines)."""
    summaries = [layout.run_summary_path(LH, "datasets", t) for t in dataset_trade_types()]
    return summaries + (get_agg_klines_reports(wildcards) if agg_klines_plan() else [])


def get_report_datasets_input(wildcards):
    """The datasets summaries the report's section 6 shows (none with the default lists)."""
    return [layout.run_summary_path(LH, "datasets", t) for t in dataset_trade_types()]


# ------------------------------------------------------------------ agg_klines
# agg_klines_plan: rules/common.smk (the data folders checked at start include its candles).


def get_agg_klines_reports(wildcards):
    return [
        shard_report_path("agg_klines", t, f"aggTrades-{i}", k)
        for t, i in agg_klines_plan()
        for k in shard_ids(t, "aggTrades")
    ]


def agg_klines_tag(wildcards):
    """The dataset tag of an agg_klines shard's reports (aggTrades-{interval})."""
    return f"aggTrades-{wildcards.interval}"


def get_agg_klines_input(wildcards):
    tt = wildcards.trade_type
    return {"parse_shard": shard_report_path("aws_parse", tt, "aggTrades", wildcards.shard)}


def get_agg_klines_args(wildcards):
    tt = wildcards.trade_type
    args = shard_args(
        "agg_klines", wildcards, "aggTrades", parse_report=report_dir("aws_parse", tt, "aggTrades")
    )
    args["symbol_paths"]["report_path"] = report_dir(
        "agg_klines", tt, f"aggTrades-{wildcards.interval}"
    )
    args.update(trade_type=tt, interval=wildcards.interval, data_dir=DATA)
    return args


def get_datasets_parse_reports(wildcards):
    """Every parse shard report of one trade type's extra datasets (after their listings)."""
    tt = wildcards.trade_type
    return [
        shard_report_path("aws_parse", tt, tag, k)
        for tag in extra_dataset_tags(tt)
        for k in shard_ids(tt, tag)
    ]


def get_datasets_summary_args(wildcards):
    tt = wildcards.trade_type
    tags = extra_dataset_tags(tt)
    dirs = {tag: report_dir("aws_download", tt, tag) for tag in tags}
    listings = [listing_index_path(tt, tag) for tag in tags]
    return dict(trade_type=tt, download_dirs=dirs, listings=listings)


def get_extra_parse_input(wildcards):
    tag = wildcard_tag(wildcards)
    tt = wildcards.trade_type
    return {"download_shard": shard_report_path("aws_download", tt, tag, wildcards.shard)}


def get_extra_parse_args(wildcards):
    tag = wildcard_tag(wildcards)
    tt = wildcards.trade_type
    entry, interval = dataset_registry.split_tag(tag)
    args = shard_args(
        "aws_parse", wildcards, tag, download_report=report_dir("aws_download", tt, tag)
    )
    args.update(trade_type=tt, dataset=entry.name, data_dir=DATA)
    if interval:
        args.update(config["parse"])  # max_inflate_ratio, max_inflated_bytes (kline parser)
        args["interval"] = interval
    return args
