"""Helpers the tests run beside the server: a webhook receiver process."""
