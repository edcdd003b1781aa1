"""The ``--out`` folder of the aue commands: checked before any work, never left half-written.

``aue run`` and ``aue calibrate`` write several files into ``--out``. A folder that cannot be
written (a file path, a read-only or full file system, an output file name taken by a folder)
must fail in one line before a model is loaded, not with a traceback after it; and the files
of a failed run must never replace those of a good one.

- :func:`prepare_output_dir` makes the folder if needed and checks it: a probe file is written
  and removed (permissions, read-only mounts and a full disk show up here), and none of the
  named output files is a folder. Any ``OSError`` becomes a one-line :class:`ConfigError`
  with its errno text.
- :func:`staged_outputs` gives a hidden staging folder inside ``--out``: the command writes
  there, and only when it succeeds is each file moved over its final name (``os.replace``,
  atomic per file); on failure (an error, Ctrl-C) the staging folder is deleted and the
  previous files stay as they were.
- :func:`remove_if_empty` deletes an ``--out`` folder a failed run created and left empty.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from aue_edge.core.errors import ConfigError

STAGING_PREFIX = ".aue-staging-"


def output_error(what: str, path: Path, exc: OSError) -> ConfigError:
    """``exc`` (an OSError on ``path``) as one line saying what could not be written."""
    reason = exc.strerror or str(exc)
    code = f"[Errno {exc.errno}] " if exc.errno else ""
    return ConfigError(f"{what} {path}: cannot write there: {code}{reason}; choose a writable "
                       f"folder with free space")


def prepare_output_dir(out_dir: str | Path, file_names: Sequence[str] = (),
                       what: str = "--out") -> bool:
    """Create ``out_dir`` if needed and check it can take ``file_names``; returns True when this
    call created it (so a failed run can remove it again). Raises a one-line ConfigError."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{what} {out_dir} is a file, not a folder; choose a folder path")
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir) as probe:
            probe.write(b"\0" * 4096)
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        if created:
            remove_if_empty(out_dir)
        raise output_error(what, out_dir, exc) from None
    taken = [name for name in file_names if (out_dir / name).is_dir()]
    if taken:
        if created:
            remove_if_empty(out_dir)
        raise ConfigError(f"{what} {out_dir}: {', '.join(taken)} "
                          f"{'is a folder' if len(taken) == 1 else 'are folders'}, where this "
                          f"command writes a file; move {'it' if len(taken) == 1 else 'them'} "
                          f"away or choose another folder")
    return created


def remove_if_empty(out_dir: str | Path) -> None:
    """Remove ``out_dir`` when it holds nothing (a failed run's folder); otherwise keep it."""
    with contextlib.suppress(OSError):
        Path(out_dir).rmdir()


@contextlib.contextmanager
def staged_outputs(out_dir: str | Path, created: bool = False) -> Iterator[Path]:
    """A staging folder inside ``out_dir`` whose files replace their namesakes in ``out_dir``
    only when the ``with`` block succeeds; see the module docstring. ``created``: this run
    made ``out_dir`` (it is removed again, if empty, after a failure)."""
    out_dir = Path(out_dir)
    stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            remove_if_empty(out_dir)
        raise
    try:
        for item in sorted(stage.iterdir()):
            os.replace(item, out_dir / item.name)
    except OSError as exc:
        raise output_error("--out", out_dir, exc) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
