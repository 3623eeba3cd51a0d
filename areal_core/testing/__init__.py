"""Reusable test material for plugins: contract suites per component kind, tiny models.

``areal_core.testing.<kind>`` holds the contract suite of that kind (``reward``, ``metric_sink``,
``device``, ``workflow``, ``train_engine``, ``inference_backend``, ``algorithm``): a class your
plugin's test module subclasses, naming the component under test (see
:mod:`areal_core.testing.contract`). Nothing is imported here, so ``areal_core.testing.tiny``
works without pytest installed.
"""
