"""One run of one export: ``run_export`` and what it is built from (diff, mirror mode, resume, progress)."""
from .options import RunOptions
from .progress import Progress
from .run_export import run_export

__all__ = ["Progress", "RunOptions", "run_export"]
