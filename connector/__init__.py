"""The connector: holds clients' long TCP connections and bridges them to Kafka.

Clients' frames come in over the wire protocol (``schemas.protocol``); sends go to
the msg topic, and the connector drains its own push topic back to its clients.
"""
