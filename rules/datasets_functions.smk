# Functions of rules/datasets.smk (kept apart from common.smk; they can move there).

CORE_DATASETS = ("klines", "funding")


def extra_dataset_tags(trade_type):
    selected = (config.get("datasets") or {}).get(trade_type) or []
    return dataset_registry.extra_tags(selected, INTERVAL, CORE_DATASETS)


def dataset_trade_types():
    """Trade types whose config lists datasets beyond klines and funding."""
    return [t for t in TRADE_TYPES if extra_dataset_tags(t)]


def get_datasets_input(wildcards):
    """The datasets summaries (each needs every parse shard of its trade type's datasets)."""
    return [f"{LH}/summaries/datasets/{t}.json" for t in dataset_trade_types()]


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
    dirs = {tag: report_dir("aws_download", tt, tag) for tag in extra_dataset_tags(tt)}
    return dict(trade_type=tt, download_dirs=dirs)


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
