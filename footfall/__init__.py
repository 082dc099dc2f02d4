"""Footfall: on-premise Wi-Fi presence analytics for physical retail."""

__version__ = "0.1.0"
