"""river estimators over the library's online learner: ``RTRLRegressor`` and ``RTRLClassifier``.

They follow river's one-sample API (``learn_one``, ``predict_one``, ``predict_proba_one``),
pass ``river.checks.check_estimator`` and sit in any river pipeline::

    from river import preprocessing, evaluate, metrics, datasets
    from sparse_rtrl.river import RTRLRegressor
    model = preprocessing.StandardScaler() | RTRLRegressor(rule="sparse", k=4, hidden=32)
    evaluate.progressive_val_score(datasets.TrumpApproval(), model, metrics.MAE())

Needs the optional dependency: ``pip install 'sparse_rtrl[river]'``.
"""

try:
    import river as _river  # noqa: F401  (the top-level river package, not this module)
except ImportError as err:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "sparse_rtrl.river needs the river package, which is not installed: "
        "pip install 'sparse_rtrl[river]' (or pip install river)"
    ) from err

from .classifier import RTRLClassifier
from .regressor import RTRLRegressor

__all__ = ["RTRLClassifier", "RTRLRegressor"]
