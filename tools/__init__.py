"""Client tools of the service: the `fhir-patch` command, its HTTP client of the API, the supervisor, dev tokens."""
