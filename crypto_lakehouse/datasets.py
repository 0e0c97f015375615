"""The dataset registry: what each Binance archive dataset is, as data.

One ``Dataset`` entry per dataset the pipeline knows: its name in the config and in the
lakehouse record paths, its folder name in the archive, the markets that publish it, the
archive periods it is read from, whether it is per kline interval, and where its symbol list
comes from. Listing, download (``archive/``), selection, the layout's archive keys and name
patterns, and the ``{dataset}`` tags of record paths read this module; no other module names
a dataset's archive folder or spells its tag.

Adding a dataset means adding one entry to ``REGISTRY`` (see ``register``), plus its parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SPOT, UM, CM = "spot", "um_futures", "cm_futures"
ALL_MARKETS = (SPOT, UM, CM)
FUTURES_MARKETS = (UM, CM)
# The markets whose aggTrades the agg_klines target builds candles of: cm aggTrades
# quantities are contracts, whose quote volume (base asset) needs the contract size.
AGG_KLINES_MARKETS = (SPOT, UM)

DAILY, MONTHLY = "daily", "monthly"


@dataclass(frozen=True)
class Dataset:
    """One archive dataset.

    ``name``: config / record-path name (``klines``, ``funding``); ``archive_name``: its folder
    in the archive (``klines``, ``fundingRate``); ``markets``: trade types publishing it;
    ``periods``: archive periods read, first = where the symbol list is taken from and the
    finest one (daily files win over monthly ones when both cover a day); ``monthly_optional``:
    the monthly period is read only when the run asks for it (klines' ``use_monthly_klines``);
    ``has_interval``: one archive folder per kline interval below the symbol's folder.
    """

    name: str
    archive_name: str
    markets: tuple[str, ...]
    periods: tuple[str, ...]
    has_interval: bool = False
    monthly_optional: bool = False
    description: str = ""
    columns: tuple[str, ...] = field(default=())
    # Per-market column lists where markets differ (spot's extra flag, cm's baseQty).
    columns_by_market: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Tick datasets: id column (strictly increasing), time column, price and quantity columns.
    id_column: str | None = None
    time_column: str | None = None
    price_columns: tuple[str, ...] = ()
    quantity_columns: tuple[str, ...] = ()
    # (first, last) id columns of a row that spans a range of ids: first <= last in every
    # row (aggTrades' first_trade_id..last_trade_id, the trades it groups).
    id_ranges: tuple[tuple[str, str], ...] = ()
    string_columns: tuple[str, ...] = ()
    # strptime format of a text time column (metrics' "YYYY-MM-DD HH:MM:SS", UTC); None: ms ints.
    time_text_format: str | None = None
    # First day whose file times are in microseconds, per market (binance-facts: spot 2025).
    micros_from: dict[str, str] = field(default_factory=dict)
    # Parsed output: "symbol" (one file), "month" (per interval and month), "day".
    partition: str = "month"
    # Empty value cells are kept as nulls (not a defect): metrics files have some.
    nullable_values: bool = False
    # Rows are sorted by time within each CSV block before validation (small files whose
    # rows are published out of order: metrics; a day of metrics is one block).
    sort_rows: bool = False
    # Times label the end of their period (metrics' 5-minute rows, binance-public-data
    # #491): a row at exactly the file's period end (the next day's 00:00:00) belongs to the
    # file and is written to its day file, not to the next day's.
    end_labels: bool = False
    # Parquet writer options of the parsed output (parse/ticks.py).
    parquet_options: dict = field(default_factory=dict)

    # ------------------------------------------------------------ tags
    def tag(self, interval: str | None = None) -> str:
        """The ``{dataset}`` of lakehouse record paths: ``klines-1m``, ``funding``."""
        if self.has_interval:
            if not interval:
                raise ValueError(f"dataset {self.name!r} needs an interval")
            return f"{self.name}-{interval}"
        return self.name

    # ------------------------------------------------------------ periods
    def read_periods(self, use_monthly: bool = False) -> tuple[str, ...]:
        """The archive periods one run reads, finest first."""
        if self.monthly_optional and not use_monthly:
            return tuple(p for p in self.periods if p != MONTHLY)
        return self.periods

    @property
    def listing_period(self) -> str:
        """The period whose folder lists the dataset's symbols (legacy §2.1: daily klines)."""
        return self.periods[0]

    def columns_for(self, trade_type: str) -> tuple[str, ...]:
        return self.columns_by_market.get(trade_type, self.columns)

    def in_micros(self, trade_type: str, first_day: str) -> bool:
        """Whether a file starting on ``first_day`` (ISO) has microsecond times."""
        since = self.micros_from.get(trade_type)
        return since is not None and first_day >= since

    def check_market(self, trade_type: str) -> None:
        if trade_type not in self.markets:
            kind = "futures" if self.markets == FUTURES_MARKETS else ", ".join(self.markets)
            raise ValueError(f"dataset {self.name!r} exists only for {kind}, not {trade_type!r}")


KLINE_COLUMNS = (
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
    "trade_num", "taker_buy_base_asset_volume", "taker_buy_quote_asset_volume", "ignore",
)  # fmt: skip

REGISTRY: dict[str, Dataset] = {}


def register(dataset: Dataset) -> Dataset:
    """Add (or replace) one entry; tests add fake datasets this way."""
    if "-" in dataset.name or "/" in dataset.name:
        raise ValueError(f"dataset name {dataset.name!r} may not hold '-' or '/'")
    REGISTRY[dataset.name] = dataset
    return dataset


def unregister(name: str) -> None:
    REGISTRY.pop(name, None)


KLINES = register(
    Dataset(
        name="klines",
        archive_name="klines",
        markets=ALL_MARKETS,
        periods=(DAILY, MONTHLY),
        has_interval=True,
        monthly_optional=True,
        description="candles at one interval",
        columns=KLINE_COLUMNS,
    )
)
FUNDING = register(
    Dataset(
        name="funding",
        archive_name="fundingRate",
        markets=FUTURES_MARKETS,
        periods=(MONTHLY,),
        description="funding rates, monthly files",
        columns=("calc_time", "funding_interval_hours", "last_funding_rate"),
        partition="symbol",
    )
)

# Kline-layout futures datasets (same 12 CSV columns; volumes and counts are 0 there).
MARK_PRICE_KLINES, INDEX_PRICE_KLINES, PREMIUM_INDEX_KLINES = (
    register(
        Dataset(
            name=name,
            archive_name=name,
            markets=FUTURES_MARKETS,
            periods=(DAILY, MONTHLY),
            has_interval=True,
            monthly_optional=True,
            description=what,
            columns=KLINE_COLUMNS,
        )
    )
    for name, what in (
        ("markPriceKlines", "mark price candles"),
        ("indexPriceKlines", "index price candles"),
        ("premiumIndexKlines", "premium index candles"),
    )
)

# Tick datasets: columns per the binance-public-data README (docs/datasets.md).
_AGG = ("agg_trade_id", "price", "quantity", "first_trade_id", "last_trade_id",
        "transact_time", "is_buyer_maker")  # fmt: skip
AGG_TRADES = register(
    Dataset(
        name="aggTrades",
        archive_name="aggTrades",
        markets=ALL_MARKETS,
        periods=(DAILY, MONTHLY),
        monthly_optional=True,
        description="aggregate trades, one parquet file per day",
        columns=_AGG,
        columns_by_market={SPOT: (*_AGG, "is_best_match")},
        id_column="agg_trade_id",
        time_column="transact_time",
        price_columns=("price",),
        quantity_columns=("quantity",),
        id_ranges=(("first_trade_id", "last_trade_id"),),
        micros_from={SPOT: "2025-01-01"},
        partition="day",
    )
)
TRADES = register(
    Dataset(
        name="trades",
        archive_name="trades",
        markets=ALL_MARKETS,
        periods=(DAILY, MONTHLY),
        monthly_optional=True,
        description="individual trades, one parquet file per day",
        columns=("id", "price", "qty", "quote_qty", "time", "is_buyer_maker"),
        columns_by_market={
            SPOT: ("id", "price", "qty", "quote_qty", "time", "is_buyer_maker", "is_best_match"),
            CM: ("id", "price", "qty", "base_qty", "time", "is_buyer_maker"),
        },
        id_column="id",
        time_column="time",
        price_columns=("price",),
        quantity_columns=("qty", "quote_qty", "base_qty"),
        micros_from={SPOT: "2025-01-01"},
        partition="day",
    )
)

# Futures metrics: open interest and long/short ratios, 5-minute rows, daily files with a
# header; columns from real files as described in docs/datasets.md.
_METRIC_VALUES = ("sum_open_interest", "sum_open_interest_value",
                  "count_toptrader_long_short_ratio", "sum_toptrader_long_short_ratio",
                  "count_long_short_ratio", "sum_taker_long_short_vol_ratio")  # fmt: skip
METRICS = register(
    Dataset(
        name="metrics",
        archive_name="metrics",
        markets=FUTURES_MARKETS,
        periods=(DAILY,),
        description="open interest and long/short ratios, 5-minute rows, one file per day",
        columns=("create_time", "symbol", *_METRIC_VALUES),
        time_column="create_time",
        string_columns=("symbol",),
        quantity_columns=_METRIC_VALUES,
        time_text_format="%Y-%m-%d %H:%M:%S",
        partition="day",
        nullable_values=True,
        sort_rows=True,
        end_labels=True,
    )
)


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str) -> Dataset:
    """The entry for a dataset name or a record-path tag (``klines-1m`` → klines)."""
    base = name.split("-", 1)[0]
    try:
        return REGISTRY[base]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {names()}") from None


def tag(dataset: str, interval: str | None = None) -> str:
    """``klines``/``klines-1m`` + interval → ``klines-1m``; ``funding`` → ``funding``.

    A tag that already carries an interval must carry this one."""
    entry = get(dataset)
    if dataset != entry.name and dataset != f"{entry.name}-{interval}":
        raise ValueError(f"dataset {dataset!r} does not match interval {interval!r}")
    return entry.tag(interval)


def split_tag(dataset_tag: str) -> tuple[Dataset, str | None]:
    """``klines-1m`` → (klines entry, ``1m``); ``funding`` → (funding entry, None)."""
    entry = get(dataset_tag)
    if entry.has_interval:
        _, sep, interval = dataset_tag.partition("-")
        if not sep or not interval:
            raise ValueError(f"dataset tag {dataset_tag!r} needs an interval")
        return entry, interval
    if dataset_tag != entry.name:
        raise ValueError(f"dataset {entry.name!r} has no interval: {dataset_tag!r}")
    return entry, None


def wildcard_pattern(names_: tuple[str, ...] | None = None) -> str:
    """Regex of the ``{dataset}`` tags of record paths (``klines-1m``, ``funding``, ...)."""
    entries = [REGISTRY[n] for n in (names_ or names())]
    return "|".join(f"{e.name}-[0-9]+[smhdw]" if e.has_interval else e.name for e in entries)


def extra_tags(selected: list[str], interval: str, core: tuple[str, ...]) -> list[str]:
    """Tags of the configured datasets beyond the ``core`` ones the main targets handle."""
    return [tag(n, interval) for n in selected if n not in core]
