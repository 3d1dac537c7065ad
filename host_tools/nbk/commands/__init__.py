"""Click command groups, registered by `nbk.cli`; each module is a thin shim over a library."""
