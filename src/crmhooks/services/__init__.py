"""What the API and the dashboard both call: shared services and operations."""
