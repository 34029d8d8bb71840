"""Plug-ins written outside the ``jmf`` package: what a researcher adds in their own project."""
