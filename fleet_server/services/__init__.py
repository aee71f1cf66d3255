"""Service layer: the logic behind the routes; each function takes its connection."""
