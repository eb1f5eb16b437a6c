"""Salesforce APIs as DMS uses them: Bulk API 2.0 ingest and its results."""
