"""nodal engine: the shared library under every nodal process (no UI code here)."""

__version__ = "0.1.0"
