"""Task registry. Importing this package registers every task family and mixture."""

from spot_core.tasks import (  # noqa: F401  (registrations)
    glue,
    language_modeling,
    mixtures,
    multiple_choice,
    nli,
    qa,
    sentiment,
    similarity,
    superglue,
)
from spot_core.tasks.base import (
    Example,
    Mixture,
    Task,
    TaskDataError,
    UnknownNameError,
    get,
    get_mixture,
    get_task,
    members,
    mixture_names,
    register,
    task_names,
)
from spot_core.tasks.loading import check_data, load_examples, load_rows, resolve_splits

__all__ = [
    "Example",
    "Mixture",
    "Task",
    "TaskDataError",
    "UnknownNameError",
    "check_data",
    "get",
    "get_mixture",
    "get_task",
    "load_examples",
    "load_rows",
    "members",
    "mixture_names",
    "register",
    "resolve_splits",
    "task_names",
]
