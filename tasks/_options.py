"""Task options shared by every molfed task.

``persist_result=False`` also switches Prefect's caching off (NO_CACHE): partner data must never be pickled into
Prefect's result storage. User mistakes (bad libraries, bad configs) are not retried.
"""

from typing import Any

from molfed.errors import MolfedError


def _retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except MolfedError:
        return False
    except Exception:
        return True
    return True


PRIVATE = {"persist_result": False, "log_prints": False, "retry_condition_fn": _retry_unless_user_error}
