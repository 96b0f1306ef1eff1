"""Analyses that exist only for the runner's tests (imported as ``testing_analyses.<name>``)."""
