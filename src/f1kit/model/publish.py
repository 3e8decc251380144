"""Publish a directory written in a temporary sibling under its final name in one rename.

Policy and model directories are written into ``tmp`` next to their destination, flushed to disk,
then renamed into place, so a crash leaves the old directory or the new one, never half of one.
"""

import os
import shutil
from pathlib import Path


def publish_directory(tmp: Path, directory: Path) -> None:
    """fsync the files of ``tmp``, then rename it to ``directory`` (an existing one is moved to a
    ``.<name>.old`` sibling first and removed after)."""
    for f in tmp.iterdir():
        if f.is_file():
            with open(f, "rb") as handle:
                os.fsync(handle.fileno())
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
        os.replace(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, directory)
