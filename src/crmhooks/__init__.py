"""crmhooks: a self-hosted CRM API (Pipeliner REST v100) with a real-time webhook engine."""

__version__ = "0.1.0"

__all__ = ["__version__"]
