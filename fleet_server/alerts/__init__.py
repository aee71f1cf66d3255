"""Alerts: rules that watch the fleet's data (offline nodes in school hours, CO2 breaches,
failed sensors), the evaluator that opens and resolves alerts, and their queries."""
