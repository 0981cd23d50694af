"""The MQTT wire: the client, the topics and their payloads, commands, the status, Home Assistant."""
