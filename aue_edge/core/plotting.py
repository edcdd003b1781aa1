"""Writing matplotlib figures to PNG, the same way in every stage (reports, plots, the demo).

matplotlib is optional on a robot (the ``plots`` extra; training installs it with ``train``):
:func:`pyplot` is the one place that imports it and picks its file-only Agg backend. Without it,
:func:`pyplot` raises :class:`PlotsUnavailableError`; the runtime commands (``aue run``,
``aue bench`` reports and soak runs) catch it and skip their PNGs with a note.
"""
from __future__ import annotations

from pathlib import Path

from aue_edge.core.errors import PlotsUnavailableError

PLOTS_INSTALL = "pip install 'aue_edge[plots]' (or pip install matplotlib)"


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (PNG files, no display needed)."""
    try:
        import matplotlib
    except ImportError as exc:
        raise PlotsUnavailableError(f"plots need matplotlib, which is not installed here "
                                    f"({exc}); {PLOTS_INSTALL}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Lay out, write (creating the folder) and close ``fig``; returns the PNG path."""
    plt = pyplot()
    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
