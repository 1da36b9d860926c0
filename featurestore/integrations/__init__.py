"""Bridges to other tools, at the CLI's level: nothing below imports them, and
each imports its tool lazily (``feast``: ``integrations/feast``)."""
