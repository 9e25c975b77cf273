"""The HTTP API: routes, envelopes, authentication and the OpenAPI document (the application
that serves them is built by ``crmhooks.app``)."""
