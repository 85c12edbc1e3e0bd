"""Prequential (test-then-train) evaluation: the one public predict → score → learn loop.

``prequential(learner, readout, stream, optimizer)`` runs it over a stream; callbacks record
the running error, the predictions, river metrics, a progress bar or stop a diverging run.
``test_then_train`` is one step of it, for adapters that see one sample at a time.
"""

from .callbacks import Metric, Progress, Recorder, RunningError, StopOnDivergence
from .loop import PrequentialResult, StepRecord, learn, predict_and_score, prequential, test_then_train

__all__ = [
    "Metric",
    "PrequentialResult",
    "Progress",
    "Recorder",
    "RunningError",
    "StepRecord",
    "StopOnDivergence",
    "learn",
    "predict_and_score",
    "prequential",
    "test_then_train",
]
