"""Webhooks: registration checks, the matching index, payload rendering."""
