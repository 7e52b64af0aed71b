"""Errors that the CLI reports as a clear one-line message and a non-zero exit."""


class PargapError(Exception):
    """A user-facing error: bad input, bad settings, numerical trouble with a hint."""


class InputError(PargapError):
    """Bad input data. The message names the file, the structure (0-based) and the key."""

    def __init__(self, message, *, file=None, structure=None, key=None):
        where = []
        if file is not None:
            where.append(f"file {file}")
        if structure is not None:
            where.append(f"structure {structure}")
        if key is not None:
            where.append(f"key '{key}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.file, self.structure, self.key = file, structure, key


class CollectiveError(PargapError):
    """An error raised on every rank at once (after a collective check), so every rank can exit
    cleanly; any other PargapError under MPI aborts the job."""


class ConfigError(PargapError):
    """Bad fit settings (TOML or gap_fit command line)."""
