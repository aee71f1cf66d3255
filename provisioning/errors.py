"""The one error type of the provisioning library: its message is the plain reason a
technician reads (what failed and what to do), printed by the CLI on one line."""


class ProvisionError(Exception):
    """A provisioning step failed; str(e) says why in one line."""
