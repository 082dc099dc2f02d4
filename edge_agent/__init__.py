"""Edge agent: probe requests in, privacy-safe visits out over MQTT."""
