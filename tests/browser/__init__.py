"""Tests in a real browser: headless Chromium drives the Airflow UI that `make airflow` starts."""
