# Functions of rules/datasets.smk (kept apart from common.smk while the sharding work
# rewrites it; they belong there once merged).

CORE_DATASETS = ("klines", "funding")


def extra_dataset_tags(trade_type):
    selected = (config.get("datasets") or {}).get(trade_type) or []
    return dataset_registry.extra_tags(selected, INTERVAL, CORE_DATASETS)


def get_datasets_input(wildcards):
    reports = []
    for trade_type in TRADE_TYPES:
        for tag in extra_dataset_tags(trade_type):
            reports += [
                report_path("aws_parse", trade_type, tag, s) for s in listed(trade_type, tag)
            ]
    return reports


def get_parse_ticks_args(wildcards):
    return dict(
        trade_type=wildcards.trade_type,
        dataset=wildcards.tick_dataset,
        symbol=wildcards.symbol,
        data_dir=DATA,
    )


def get_parse_kline_layout_args(wildcards):
    args = get_parse_args(wildcards)
    args["dataset"] = wildcards.kline_dataset
    return args
