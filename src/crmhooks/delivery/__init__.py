"""Delivery: routing events to webhooks, chunking, signing, sending, retrying."""
