"""Adapters that make fastkd the loss engine of other trainers (``fastkd.integrations.trl``)."""
