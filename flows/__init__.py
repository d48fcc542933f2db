"""Prefect flows composing the tasks, and the ``prnf`` command line."""

import tasks  # noqa: F401  (applies the quiet service defaults before Prefect is imported)
