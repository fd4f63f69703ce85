"""One SHAP explainer per module, as shap keeps them (``shap/explainers/_tree.py``...).

* :mod:`._tree`: TreeSHAP (``shap.TreeExplainer``, tree-path-dependent) for tree ensembles,
  XGBoost/LightGBM boosters, multiclass gradient boosting and pipelines with categorical columns.
* :mod:`._native_tree`: the same TreeSHAP for scikit-learn's forests and decision trees on
  shap's C kernel, without importing shap (an explainer's cold start).
* :mod:`._linear`: LinearSHAP (``shap.LinearExplainer``, interventional) over the whole
  background.
* :mod:`._kernel`: KernelSHAP, each row seeded from its own values, computed by
  :mod:`._shapley_kernel` (shap's ``KernelExplainer`` algorithm in numpy, without shap).
* :mod:`._exact`: every coalition through the kernel machinery (exact Shapley values).
* :mod:`._common`: the options, the result and the output spaces they share.

``chalicelib.explainability.shap_engine.SHAPExplainer`` chooses one per model and builds the
explanations; shap itself is imported on first use only.
"""
