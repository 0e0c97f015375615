"""A local stand-in for Binance: the data.binance.vision archive (S3 listing + objects) and,
through a pluggable handler, the public REST endpoints. Used by every test; never the internet.
"""

from .faults import Faults
from .server import Emulator
from .synthetic import SyntheticUniverse

__all__ = ["Emulator", "Faults", "SyntheticUniverse"]
