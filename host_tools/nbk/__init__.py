"""nbk: the NeuroBuild bench tool — build, flash, deploy, provision, monitor."""

__version__ = "0.1.0"
