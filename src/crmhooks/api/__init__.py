"""The HTTP API: FastAPI application, routes, envelopes and authentication."""

from crmhooks.api.app import create_app

__all__ = ["create_app"]
