"""Triggers: waits handed to Airflow's triggerer, so no worker slot sits polling Salesforce."""
