"""Technician provisioning (flash, deploy, register, verify, label): library first,
CLI second. Filled in by the provisioning work; the package exists so the layout and
the `campusfleet` distribution already carry it."""
