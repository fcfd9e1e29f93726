"""Using a library's prompts: one frozen model answers rows of many tasks in shared batches.

prompts.py  the prompts one model serves (`PromptSet`: a library's entries or prompt files) and the rows it
            answers (`Request`: an entry or a task, and the task's fields or its input text)
engine.py   `Predictor`: mixed-task batches, each row on its own prompt, with the same labels and scores as
            scoring it alone
cache.py    `PromptCache`: decoder-only prompts' keys and values, kept across batches within a byte bound
"""

from spot_core.serving.cache import PromptCache, size_of
from spot_core.serving.engine import Prediction, Predictor
from spot_core.serving.prompts import PromptSet, Request, RequestError, TaskPrompt

__all__ = ["Prediction", "Predictor", "PromptCache", "PromptSet", "Request", "RequestError", "TaskPrompt", "size_of"]
