"""Build-time tooling: data builders, training and export of the weights that ship in ``assets/``, and the
example scenes. The app and the methods never import this package (``tests/test_layout.py`` checks)."""
