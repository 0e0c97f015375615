"""The ``gen_kline`` stage: merged, gap-split, gap-filled klines per symbol (legacy §8)."""

from crypto_lakehouse.generate.kline import run_gen_kline

__all__ = ["run_gen_kline"]
