"""fhir-patch-worker intake API (FastAPI)."""
