"""Users, roles, API tokens, web sessions, region scoping and the audit log (issue 7;
docs/security.md "Users, roles and audit")."""
