"""Fixtures of the API tests here: the policy lab of tests/unit/test_api_policy.py (an
app with admin, agent and read-only tokens; hosts h1 and h2; networks web, api, db)."""

from tests.unit.test_api_policy import admin, app, ctx, events, lab

__all__ = ["admin", "app", "ctx", "events", "lab"]
