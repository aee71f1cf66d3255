"""The broker access rules of PROTOCOL.md as data and predicates, shared by both
brokers: the dynamic-security roles sent to Mosquitto and the amqtt plugin's checks.

A node publishes only under `campus/v1/{its id}/` (never to its own `cmd`: commands come
from the server) and subscribes only to `campus/v1/{its id}/cmd`; the server's own
client reads every node topic and writes `cmd`."""
from __future__ import annotations

import re

DEVICE_ID_RE = re.compile(r"^cf-[0-9a-f]{12}$")
TOPIC_ROOT = "campus/v1"
# Role names on Mosquitto. Mosquitto 2.0's dynamic-security plugin does not substitute
# %c / %u in ACL topics (checked against 2.0.11: a `campus/v1/%c/cmd` ACL matches
# nothing), so each device gets a role of its own, named after it.
SERVER_ROLE = "campusfleet-server"
DEVICE_ROLE_PREFIX = "campusfleet-device-"


def is_device_id(name: str | None) -> bool:
    return bool(name) and DEVICE_ID_RE.match(name) is not None


def device_role(device_id: str) -> str:
    return DEVICE_ROLE_PREFIX + device_id


def cmd_topic(device_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/cmd"


def topic_device(topic: str) -> str | None:
    """The device id a `campus/v1/{id}/...` topic names, or None."""
    parts = topic.split("/")
    if len(parts) >= 3 and f"{parts[0]}/{parts[1]}" == TOPIC_ROOT:
        return parts[2]
    return None


# -- predicates (the amqtt plugin) ------------------------------------------------------

def device_may_publish(device_id: str, topic: str) -> bool:
    own = f"{TOPIC_ROOT}/{device_id}"
    return (topic == own or topic.startswith(own + "/")) and topic != cmd_topic(device_id)


def device_may_subscribe(device_id: str, topic_filter: str) -> bool:
    return topic_filter == cmd_topic(device_id)


def device_may_receive(device_id: str, topic: str) -> bool:
    return topic == cmd_topic(device_id)


def server_may_publish(topic: str) -> bool:
    parts = topic.split("/")
    return (len(parts) == 4 and f"{parts[0]}/{parts[1]}" == TOPIC_ROOT and parts[3] == "cmd"
            and "+" not in topic and "#" not in topic)


def server_may_subscribe(topic_filter: str) -> bool:
    if topic_filter.startswith("$share/"):
        # $share/{group}/{filter} (MQTT 5, 4.8.2): the filter is what counts.
        parts = topic_filter.split("/", 2)
        if len(parts) < 3:
            return False
        topic_filter = parts[2]
    return topic_filter == TOPIC_ROOT + "/#" or topic_filter.startswith(TOPIC_ROOT + "/")


def server_may_receive(topic: str) -> bool:
    return topic.startswith(TOPIC_ROOT + "/")


# -- dynamic-security roles (Mosquitto) -------------------------------------------------

def dynsec_device_acls(device_id: str) -> list[dict]:
    """ACLs of a device's own role. Higher priority is checked first: the deny on its own
    cmd topic wins over the allow of its subtree."""
    own = f"{TOPIC_ROOT}/{device_id}"
    return [
        {"acltype": "publishClientSend", "topic": cmd_topic(device_id), "priority": 10, "allow": False},
        {"acltype": "publishClientSend", "topic": own + "/#", "priority": 0, "allow": True},
        {"acltype": "subscribeLiteral", "topic": cmd_topic(device_id), "priority": 0, "allow": True},
        {"acltype": "publishClientReceive", "topic": cmd_topic(device_id), "priority": 0, "allow": True},
    ]


def dynsec_server_acls() -> list[dict]:
    """The server's own role (ingest and commands): read every node topic, directly or
    through a shared subscription, and write `cmd`."""
    return [
        {"acltype": "subscribePattern", "topic": TOPIC_ROOT + "/#", "priority": 0, "allow": True},
        {"acltype": "subscribePattern", "topic": f"$share/+/{TOPIC_ROOT}/#", "priority": 0, "allow": True},
        {"acltype": "unsubscribePattern", "topic": TOPIC_ROOT + "/#", "priority": 0, "allow": True},
        {"acltype": "unsubscribePattern", "topic": f"$share/+/{TOPIC_ROOT}/#", "priority": 0, "allow": True},
        {"acltype": "publishClientReceive", "topic": TOPIC_ROOT + "/#", "priority": 0, "allow": True},
        {"acltype": "publishClientSend", "topic": f"{TOPIC_ROOT}/+/cmd", "priority": 0, "allow": True},
    ]


# What a broker without a matching ACL does (dynsec setDefaultACLAccess): deny sends and
# subscriptions, allow receiving and unsubscribing (the role ACLs above narrow what is
# received to what was subscribed to, which the subscribe ACLs already confine).
DYNSEC_DEFAULT_ACCESS = [
    {"acltype": "publishClientSend", "allow": False},
    {"acltype": "publishClientReceive", "allow": True},
    {"acltype": "subscribe", "allow": False},
    {"acltype": "unsubscribe", "allow": True},
]
