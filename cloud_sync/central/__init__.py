"""The central service: every store's profiles, segments and consents, for the marketing team.

Modules, one concern each: ``db`` (one SQL code path over SQLite or PostgreSQL), ``model``
(schema and idempotent batch application), ``auth`` (roles, sessions, API keys), ``consent``
(152-FZ consent, opt-out, retention), ``segments`` (JSON rules to SQL, versioned recounts),
``export`` (data-supplier CSV, generic CSV/JSON), ``cdp`` (push to a CDP bulk import), ``app``
(the FastAPI app: sync endpoints, pages, JSON API, metrics).
"""
