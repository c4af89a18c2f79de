"""Imported at start-up by every Python process the test suite starts (tests/conftest.py puts this folder on
``PYTHONPATH``): servers, workers, the flow-run processes workers spawn, ``molfed`` CLI runs.

It defers ``rfc3987_syntax``'s import exactly as ``molfed run`` does for itself
(:func:`molfed.startup.lazy_optional_imports`): ~3 s of CPU per process that imports Prefect, validation unchanged.
"""

try:
    from molfed.startup import lazy_optional_imports
except ImportError:  # a process started without molfed on its path
    pass
else:
    lazy_optional_imports()
