"""Tracking: MLflow key names, the store and its retries, trial runs, the tracking server and the UI."""
