"""The report of a run directory: figures and report.html, rebuilt from the files alone."""

from unforced.report.html import build_report
from unforced.runfiles import read_run

__all__ = ["build_report", "read_run"]
