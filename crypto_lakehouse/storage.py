"""The storage seam: where data lives (a local folder or ``s3://bucket/prefix``) and how it
is read, written, listed and deleted there (docs/storage.md).

Settings come from the config block ``storage`` and reach each job through its parameters
(key ``storage`` of the job JSON, only the settings that differ from the defaults, so that
this seam reruns nothing); :func:`configure` applies them once per process.
"""

from __future__ import annotations

from typing import Any

from crypto_lakehouse import io

# The config block's defaults (config/config.schema.yaml): AWS's endpoint and region
# resolution, virtual-hosted addressing, durable local writes.
DEFAULTS: dict[str, Any] = {
    "endpoint_url": None,
    "region": None,
    "addressing_style": "virtual",
    "fsync": True,
}

_SETTINGS: dict[str, Any] = dict(DEFAULTS)


def job_settings(config_storage: dict | None) -> dict[str, Any]:
    """The settings a job must receive: those of the config block that differ from the
    defaults (an empty dict for a default config, so job parameters do not change)."""
    config_storage = config_storage or {}
    unknown = set(config_storage) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"storage: unknown key(s) {sorted(unknown)}")
    return {k: v for k, v in config_storage.items() if v != DEFAULTS[k]}


def configure(settings: dict | None) -> None:
    """Apply a job's ``storage`` settings to this process (io's fsync switch included)."""
    global _SETTINGS
    merged = dict(DEFAULTS)
    merged.update(settings or {})
    unknown = set(merged) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"storage: unknown key(s) {sorted(unknown)}")
    _SETTINGS = merged
    io.configure(fsync=merged["fsync"])


def settings() -> dict[str, Any]:
    return dict(_SETTINGS)
