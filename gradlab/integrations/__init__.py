"""Adapters from training frameworks to ``gradlab.Tracker`` (optional extras)."""
