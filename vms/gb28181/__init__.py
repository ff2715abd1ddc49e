"""GB/T 28181 access: the registry of devices and lower platforms registered to vms over SIP (the server itself is
probes.gb28181), their status from keepalives through the health status and events, and their catalogs merged
into the inventory as the source ``gb28181:<device id>``."""
