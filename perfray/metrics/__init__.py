"""Live metrics for watching a run (Prometheus, Grafana, the Ray dashboard). Never used for reports: those
come from the recorded rows."""
