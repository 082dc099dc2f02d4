"""Cloud sync: hub to central, and the central service."""
