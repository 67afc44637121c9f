"""The submission path: the one way work enters the service (record, count, queue, drain message).

`submitter.py` is the path itself, used by the API and by the reconciler.
`backends.py` opens what an API process holds of the worker side; the API
imports this package, the model, the errors and the settings, and nothing
else of the worker.
"""

from worker.submission.drains import CALLBACK_TASK, DRAIN_TASK, DrainSender
from worker.submission.submitter import Submission, Submitter, Taken

__all__ = ["CALLBACK_TASK", "DRAIN_TASK", "DrainSender", "Submission", "Submitter", "Taken"]
