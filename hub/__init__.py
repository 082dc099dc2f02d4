"""Store hub: ingest, storage, metrics and the store manager's dashboard."""
