"""DMS: the migration engine (Airflow puts plugins/ on sys.path, so this imports as `dms`)."""
