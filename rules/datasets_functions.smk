# Functions of rules/datasets.smk (kept apart from common.smk; they can move there).

CORE_DATASETS = ("klines", "funding")


def extra_dataset_tags(trade_type):
    selected = (config.get("datasets") or {}).get(trade_type) or []
    return dataset_registry.extra_tags(selected, INTERVAL, CORE_DATASETS)


def get_datasets_input(wildcards):
    """Every parse shard report of the configured extra datasets (after their listings)."""
    reports = []
    for trade_type in TRADE_TYPES:
        for tag in extra_dataset_tags(trade_type):
            reports += [
                shard_report_path("aws_parse", trade_type, tag, k)
                for k in shard_ids(trade_type, tag)
            ]
    return reports


def get_extra_parse_input(wildcards):
    tag = extra_tag(wildcards)
    tt = wildcards.trade_type
    return {"download_shard": shard_report_path("aws_download", tt, tag, wildcards.shard)}


def extra_tag(wildcards):
    if "tick_dataset" in wildcards.keys():
        return wildcards.tick_dataset
    return f"{wildcards.kline_dataset}-{wildcards.interval}"


def get_extra_parse_args(wildcards):
    tag = extra_tag(wildcards)
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
