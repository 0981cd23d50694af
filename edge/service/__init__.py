"""The service around the stages: the daemon loop, MQTT, outbox, commands, notify, status, web, actuator."""
