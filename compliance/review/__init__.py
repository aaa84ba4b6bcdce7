"""Least-privilege review: what principals may do against what they did, generated
least-privilege policies, change previews and external access.

``analysis`` and ``preview`` are pure (facts in, answers out, decisions by the
real policy engine and the real compliance rules); ``services`` loads the facts,
authorizes the reader and records the read.
"""
