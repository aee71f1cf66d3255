"""OTA campaigns (docs/ota.md "Campaigns"): a release rolled out to a target set of
devices in waves that advance only on success and halt by themselves on failures."""
