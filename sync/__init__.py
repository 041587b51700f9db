"""Pairing, the live hub, assets, screen-point localization."""
