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
    translation,
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
from spot_core.tasks.loading import check_data, check_downloads, load_examples, read_examples, read_rows
from spot_core.tasks.source import DataSource

__all__ = [
    "DataSource",
    "Example",
    "Mixture",
    "Task",
    "TaskDataError",
    "UnknownNameError",
    "check_data",
    "check_downloads",
    "get",
    "get_mixture",
    "get_task",
    "load_examples",
    "members",
    "mixture_names",
    "read_examples",
    "read_rows",
    "register",
    "task_names",
]
