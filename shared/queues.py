"""Queue and task names: the only contract between the services."""

from __future__ import annotations


class Queues:
    """Celery queues; each is consumed by exactly one worker service."""

    PROVISION = "provision"
    EXECUTE = "execute"
    FINALIZE = "finalize"
    # Periodic housekeeping (reconciler, outbox relay); consumed by the finalizer service.
    MAINTENANCE = "maintenance"
    # Outbound webhooks and commit statuses, apart so slow receivers never delay the relay.
    WEBHOOKS = "webhooks"
    # Short polls of Azure container groups (issue 7), apart from long Docker executions so a
    # busy execute queue never delays a poll past its heartbeat.
    ACI = "aci"

    @classmethod
    def all(cls) -> list[str]:
        """Return every queue name."""
        return [cls.PROVISION, cls.EXECUTE, cls.FINALIZE, cls.MAINTENANCE, cls.WEBHOOKS, cls.ACI]


class TaskNames:
    """Celery task names; a service hands work on by name, never by import."""

    PROVISION = "sandbox.provision"
    EXECUTE = "sandbox.execute"
    FINALIZE = "sandbox.finalize"
    RECONCILE = "sandbox.reconcile"
    RELAY_OUTBOX = "sandbox.relay_outbox"
    DELIVER_WEBHOOKS = "sandbox.deliver_webhooks"
    RETENTION = "sandbox.retention"
    VACUUM = "sandbox.vacuum"
    ACI_POLL = "sandbox.aci_poll"


ROUTES: dict[str, str] = {
    TaskNames.PROVISION: Queues.PROVISION,
    TaskNames.EXECUTE: Queues.EXECUTE,
    TaskNames.FINALIZE: Queues.FINALIZE,
    TaskNames.RECONCILE: Queues.MAINTENANCE,
    TaskNames.RELAY_OUTBOX: Queues.MAINTENANCE,
    TaskNames.RETENTION: Queues.MAINTENANCE,
    TaskNames.VACUUM: Queues.MAINTENANCE,
    TaskNames.DELIVER_WEBHOOKS: Queues.WEBHOOKS,
    TaskNames.ACI_POLL: Queues.ACI,
}

# Which service consumes which queues (the worker command lines use this too).
SERVICE_QUEUES: dict[str, list[str]] = {
    "provisioner": [Queues.PROVISION],
    "executor": [Queues.EXECUTE, Queues.ACI],
    "finalizer": [Queues.FINALIZE, Queues.MAINTENANCE, Queues.WEBHOOKS],
}
