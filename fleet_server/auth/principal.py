"""Who is calling: a Principal is the user (or the system), its role, the region or
school it is confined to, and the scopes this request may use."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

# Scopes: what a request may do. Reading is further confined to the principal's region
# or school by fleet_server.auth.scoping.
READ = "read"
DEVICES_ASSIGN = "devices:assign"          # assign / move a device to a room
DEVICES_COMMAND = "devices:command"        # identify, sync, reboot, ota
DEVICES_REGISTER = "devices:register"      # provisioning register, credentials rotate / revoke
ALERTS_ACK = "alerts:ack"
REGISTRY_IMPORT = "registry:import"        # CSV imports of schools, rooms, timetables, calendars
FIRMWARE_UPLOAD = "firmware:upload"
USERS_MANAGE = "users:manage"              # users and other people's tokens
AUDIT_READ = "audit:read"
ALL_SCOPES = (READ, DEVICES_ASSIGN, DEVICES_COMMAND, DEVICES_REGISTER, ALERTS_ACK, REGISTRY_IMPORT,
              FIRMWARE_UPLOAD, USERS_MANAGE, AUDIT_READ)

REGION_ROLES = ("province", "city", "county")
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "province": frozenset({READ}),
    "city": frozenset({READ}),
    "county": frozenset({READ}),
    "school_admin": frozenset({READ, DEVICES_ASSIGN, ALERTS_ACK}),
    "technician": frozenset({READ, DEVICES_ASSIGN, DEVICES_COMMAND, DEVICES_REGISTER, ALERTS_ACK}),
    "operator": frozenset(ALL_SCOPES),
}


@dataclass(frozen=True)
class Principal:
    user_id: int | None
    username: str
    role: str
    region_code: int | None = None     # province / city / county users (and optionally technicians)
    school_id: int | None = None       # school admins
    scopes: frozenset[str] = field(default_factory=frozenset)
    via: str = "system"                # token | session | system
    token_id: int | None = None
    ip: str | None = None

    @property
    def unrestricted(self) -> bool:
        """Sees every region and school."""
        return self.region_code is None and self.school_id is None

    def has(self, scope: str) -> bool:
        return scope in self.scopes

    def at(self, ip: str | None) -> Principal:
        return replace(self, ip=ip)

    @classmethod
    def system(cls, ip: str | None = None) -> Principal:
        """auth_required=False (a throwaway test server) and server-internal callers."""
        return cls(None, "system", "operator", scopes=frozenset(ALL_SCOPES), via="system", ip=ip)
