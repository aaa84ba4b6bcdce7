"""A small OpenID provider (django-oauth-toolkit) that the SSO browser tests start as their own process.

It is a separate Django project: its own settings, SQLite database, users
and RS256 signing key, generated at start. See ``serve.py``.
"""
