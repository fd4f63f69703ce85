"""A/B testing and canary rollouts of model versions.

Public names: :class:`~chalicelib.abtesting.engine.ABTestingEngine`,
:class:`~chalicelib.abtesting.statistics.StatisticalAnalyzer`,
:class:`~chalicelib.abtesting.rollback.AutoRollbackManager` and the domain types in
:mod:`chalicelib.abtesting.models`. Import them from their modules; this package imports nothing
on its own so that ``import app`` stays cheap.
"""
