"""Task registry. Importing this package registers every task family."""

from spot_core.tasks import glue  # noqa: F401  (registrations)
from spot_core.tasks.base import Example, Task, TaskDataError, get_task, register, task_names
from spot_core.tasks.loading import load_examples, load_rows

__all__ = ["Example", "Task", "TaskDataError", "get_task", "load_examples", "load_rows", "register", "task_names"]
