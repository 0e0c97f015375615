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
