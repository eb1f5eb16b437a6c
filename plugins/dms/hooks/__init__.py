"""Hooks that extend the providers' own: Salesforce, Redis staging, Cloudant audit."""
