"""FastAPI policy API under /api/v1."""
