"""The local AWS IoT data plane: the mosquitto broker plugin (claimfab_auth.c), its launcher,
and the fleet-provisioning service with the policy decisions behind the plugin."""
