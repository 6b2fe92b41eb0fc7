"""Connectors that service tasks call (CRM records, e-mail, webhooks)."""
