"""The experiment grid that run_all.sh runs (grid.py) and the reports it writes (report.py)."""
