//! The run report: runs/<run-id>/report.json and report.md.
