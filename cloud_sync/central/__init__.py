"""The central service: every store's profiles, segments and consents, for the marketing team.

Modules, one concern each: ``db`` (one SQL code path over SQLite or PostgreSQL), ``schema``
(tables and migrations), ``validation`` (a batch's records checked into a plan), ``apply``
(the plan applied exactly once), ``profiles`` (bulk profile, identifier and event writes),
``pushback`` (the queue the hubs pull), ``auth`` (roles, sessions, API keys), ``consent``
(152-FZ consent, opt-out, retention), ``segments`` (JSON rules to SQL, versioned recounts),
``export`` (data-supplier CSV, generic CSV/JSON), ``cdp`` (push to a CDP bulk import), ``app``
(the FastAPI app, built from one router per area: ``sync_web``, ``pages_web``, ``stores_web``,
``profiles_web``, ``segments_web``, ``o2o_web``, ``definitions_web``, ``consent_web``, with
``deps`` and ``metrics``).
"""
