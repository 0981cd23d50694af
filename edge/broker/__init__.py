"""The MQTT connection: the client and its TLS, the publisher that keeps the Last Will and forwards the
outbox, a decision's age on the wire, and Home Assistant's discovery."""
