"""User-facing errors: each carries a one-line message and maps to CLI exit status 2."""


class PipelineError(Exception):
    """A problem the user can fix (bad parameter, missing data); printed without a traceback."""

    exit_code = 2


class ConfigError(PipelineError):
    """A parameter is unknown, of the wrong type, out of range or names something that does not exist."""


class DatasetError(PipelineError):
    """A dataset is missing or malformed; the message says where it looked and what layout it expects."""


class TrainingError(PipelineError):
    """Training cannot go on (for example a non-finite loss); the last good checkpoint is kept."""


class ArtifactError(PipelineError):
    """A file the pipeline reads back (model, checkpoint) is unreadable, unsafe or foreign."""


class RunLockedError(PipelineError):
    """Another process is running the same stage instance (it holds the run directory's lock)."""


class ResourceError(PipelineError):
    """The machine refused a write: disk full, read-only or forbidden folder, file-size limit.

    The message names the path and the reason; what was there before is kept (every write goes
    to a temporary name first and is renamed into place only when complete).
    """
