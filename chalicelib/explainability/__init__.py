"""Model explainability: SHAP and LIME explanations, aggregation and a content-hash cache.

Entry points: :func:`chalicelib.explainability.service.get_explanation_service` (Python API),
:mod:`chalicelib.explainability.api` (HTTP), :mod:`chalicelib.explainability.handlers` (the SQS
job worker and the explanation function). shap, lime and scikit-learn are imported only on the
explanation path, never when this package is imported.
"""
