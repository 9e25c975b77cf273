"""What the API and the dashboard both call (the shared services and the operations on
deliveries), above ``delivery`` and below ``api`` / ``ui``: neither front-end imports the other."""
