"""The archive side of ``aws_download``: data.binance.vision listing, symbol filters,
CHECKSUM verification and the concurrent, incremental downloader.

Modules:
- ``http``: GET with retries (exponential back-off + jitter) and streamed downloads.
- ``listing``: S3 ListObjects v1 parsing and pagination; ``run_listing`` (the checkpoint).
- ``symbols``: name inference and the legacy symbol filters (legacy-behaviour §2).
- ``checksum``: ``.CHECKSUM`` sidecar parsing and streaming SHA-256.
- ``selection``: which zips of a symbol cover a date range (daily / monthly).
- ``sync``: ``run_sync``, one symbol's download + verification; ``run_sync_shard``, the
  download job (its symbols at once).
"""
