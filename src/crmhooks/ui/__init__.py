"""The web dashboard at ``/ui``: server-rendered pages to manage a space's webhooks and watch
their deliveries, in the same process as the API (see docs/dashboard.md).

Modules: ``sessions`` (signed cookies, CSRF tokens), ``forms`` (form bodies in and out),
``chart`` (the per-minute chart), ``queries`` (what the pages read beyond the API's queries),
``web`` (templates, session and CSRF checks, HTML errors), ``signin``, ``webhook_pages`` and
``delivery_pages`` (the pages), ``routes`` (all of them, for ``crmhooks.app`` to mount).
"""
