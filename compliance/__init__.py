"""Compliance monitoring: rules as code over kmsweb's own facts, and the findings they produce."""
