"""One look for statuses everywhere: deployment health and scenario outcomes."""

from __future__ import annotations

import pandas as pd
from pandas.io.formats.style import Styler

# status → (badge colour, Material icon, table cell background)
_LOOK: dict[str, tuple[str, str, str]] = {
    "HEALTHY": ("green", ":material/check_circle:", "#dcfce7"),
    "SUCCESS": ("green", ":material/check_circle:", "#dcfce7"),
    "WARNING": ("orange", ":material/warning:", "#ffedd5"),
    "OUT_OF_SYNC": ("violet", ":material/sync_problem:", "#ede9fe"),
    "UNHEALTHY": ("red", ":material/error:", "#fee2e2"),
    "ERROR": ("red", ":material/error:", "#fee2e2"),
    "FAILED": ("red", ":material/error:", "#fee2e2"),
    "ABORTED": ("red", ":material/cancel:", "#fee2e2"),
    "RUNNING": ("blue", ":material/autorenew:", "#dbeafe"),
    "REQUESTED": ("blue", ":material/send:", "#dbeafe"),
    "QUEUED": ("gray", ":material/schedule:", "#f1f5f9"),
}
_UNKNOWN = ("gray", ":material/help:", "#f1f5f9")


def status_badge(status: str, label: str | None = None) -> str:
    """Markdown for a coloured badge, e.g. ``:green-badge[:material/check_circle: HEALTHY]``.

    Use it inside ``st.markdown``/``st.write`` text so the badge sits in a sentence.
    """
    color, icon, _ = _LOOK.get(status, _UNKNOWN)
    return f":{color}-badge[{icon} {label or status}]"


def style_status(frame: pd.DataFrame, *columns: str) -> Styler:
    """``frame`` with its status ``columns`` shaded by status (pass it to ``st.dataframe``)."""

    def shade(value: object) -> str:
        return f"background-color: {_LOOK.get(str(value), _UNKNOWN)[2]}"

    return frame.style.map(shade, subset=list(columns))
