"""Baton's workflow engine: a facade over SpiffWorkflow with persistence, projections and audit.

Import the facade from ``engine.facade`` (``Engine``) and errors from ``engine.errors``; this
package module stays empty so that importing the models does not load the whole engine.
"""
