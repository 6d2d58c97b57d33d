"""Human-readable compatibility reports: ``report.md`` and a self-contained ``report.html``."""

from muscle.report.render import regression_rows, write_reports

__all__ = ["regression_rows", "write_reports"]
