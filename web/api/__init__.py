"""Baton's REST API (/api/v1): one blueprint per resource, marshmallow schemas, OpenAPI 3."""
