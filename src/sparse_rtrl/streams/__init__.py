"""Your own stream: read a CSV or a river dataset, forecast it one step ahead prequentially,
and report it (``sparse-rtrl stream``)."""

from ..errors import InputError
from .csv import read_csv
from .river_data import load_river_dataset
from .run import StreamConfig, StreamRun, forecast, summary, write_outputs
from .series import ForecastingStream, Series


def load(source: str, target: str | None = None, features: list[str] | None = None) -> Series:
    """``river:NAME`` (a river dataset, ``river:drift.NAME`` for the change-point ones) or a
    CSV path (then ``target`` is required)."""
    if source.startswith("river:"):
        if features is not None:
            raise InputError("--features applies to CSV files; a river dataset uses its numeric features")
        return load_river_dataset(source[len("river:"):], target)
    if target is None:
        raise InputError(f"{source}: name the column to forecast with --target COLUMN")
    return read_csv(source, target, features)


__all__ = ["ForecastingStream", "Series", "StreamConfig", "StreamRun", "forecast", "load", "load_river_dataset",
           "read_csv", "summary", "write_outputs"]
