"""Tasks, data loading (hub or local files), synthetic tasks, tokenisation and the LightningDataModule."""

from tmkd.data.datamodule import STUDENT, TaskDataModule
from tmkd.data.loading import load_splits
from tmkd.data.sources import DataError
from tmkd.data.tasks import TASKS, TaskSpec, get_task, register_task

__all__ = ["STUDENT", "TASKS", "DataError", "TaskDataModule", "TaskSpec", "get_task", "load_splits", "register_task"]
