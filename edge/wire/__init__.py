"""The MQTT wire's contract: the topics and their payloads, commands, the status, the schemas."""
