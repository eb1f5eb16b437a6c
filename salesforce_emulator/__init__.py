"""A local Salesforce API for rehearsals, the demo and the tests: REST, Bulk 2.0, Bulk 1.0 over HTTPS."""
