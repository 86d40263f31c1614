"""Figures computed from recorded request rows."""
