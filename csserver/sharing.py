"""Whether this node may act as a partner's backup: the evidence that both use one store (SPEC 6, "A store
that is really shared").

Two nodes on two hosts, each with its own SQLite file, look like a pair yet share nothing: after a
failover the backup answers 404 for the primary's contexts, and what it creates under the primary's
alias collides with the primary's own. So a node adopts a partner's contexts, or creates under its
alias, only on a store it has shown to be shared with that partner:

- seen in the store: the partner has joined this store (its row in `nodes`, written by its heartbeat);
- asked over HTTP: the partner, reached at its VIP while it is up, names the same store identity.

A partner that names another store shows the store is *not* shared: that is refused (`/healthz` fails
with the reason, so vrrpd's health check keeps the VIPs away) and said once in the log. A partner never
seen either way is unproven: this node serves its own contexts and refuses (503, with the reason) to
adopt or create under the partner's alias, until the partner shows up.

`judge` is the pure decision; `Sharing` keeps the evidence and logs each change of verdict once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from csserver.store.base import Node

log = structlog.get_logger("csserver")


@dataclass(frozen=True)
class Shared:
    partner: str
    how: str  # "seen in the store" or "asked over HTTP"


@dataclass(frozen=True)
class NotShared:
    partner: str
    detail: str


@dataclass(frozen=True)
class Unproven:
    partner: str
    detail: str


Verdict = Shared | NotShared | Unproven


def judge(partner: str, my_store: str, joined: bool, reported: str | None) -> Verdict:
    """The verdict on `partner` from what is known: has it joined this store, which store does it name."""
    if reported is not None and reported != my_store:
        return NotShared(partner, f"{partner} uses store {reported}, this node store {my_store}: they do not "
                                  f"share one store, so neither can take over the other's contexts (two "
                                  f"hosts need one PostgreSQL; a SQLite file is shared only on one host)")
    if joined:
        return Shared(partner, "seen in the store")
    if reported is not None:
        return Shared(partner, "asked over HTTP")
    return Unproven(partner, f"{partner} has never been seen in this store ({my_store}), nor answered this "
                             f"node: it cannot be shown to share it, so this node does not act as its backup yet")


class Sharing:
    """The evidence on each partner (the aliases this node backs up, and its own backup)."""

    def __init__(self, me: str, partners: Iterable[str], store_id: str | None = None):
        self.me = me
        self.partners = tuple(sorted(set(partners) - {me}))
        self.store_id = store_id
        self._joined: set[str] = set()
        self._reported: dict[str, str] = {}
        self._said: dict[str, Verdict] = {}

    def verdict(self, partner: str) -> Verdict:
        if self.store_id is None:
            return Unproven(partner, "the store's identity is not known yet")
        return judge(partner, self.store_id, partner in self._joined, self._reported.get(partner))

    def saw_nodes(self, nodes: Iterable[Node]) -> None:
        self._joined |= {n.alias for n in nodes} & set(self.partners)
        self._announce()

    def heard(self, partner: str, store_id: str) -> None:
        """`partner`, asked over HTTP, named `store_id` as its store."""
        if partner in self.partners:
            self._reported[partner] = store_id
            self._announce()

    def refusal(self, partner: str) -> str | None:
        """Why this node must not act as `partner`'s backup (adopt, create under its alias), or None."""
        if partner == self.me or partner not in self.partners:
            return None
        verdict = self.verdict(partner)
        return None if isinstance(verdict, Shared) else verdict.detail

    def problem(self) -> str | None:
        """Why /healthz fails: a partner has shown the store is not shared. None otherwise."""
        for partner in self.partners:
            verdict = self.verdict(partner)
            if isinstance(verdict, NotShared):
                return verdict.detail
        return None

    def state(self) -> dict[str, int]:
        """partner -> 1 shared, 0 unproven, -1 not shared (the csserver_store_shared gauge)."""
        values = {Shared: 1, Unproven: 0, NotShared: -1}
        return {p: values[type(self.verdict(p))] for p in self.partners}

    def _announce(self) -> None:
        for partner in self.partners:
            verdict = self.verdict(partner)
            said = self._said.get(partner)
            if said == verdict or (isinstance(said, Shared) and isinstance(verdict, Shared)):
                continue  # said once: how it came to be known does not matter
            self._said[partner] = verdict
            if isinstance(verdict, Shared):
                log.info("store_shared", partner=partner, store_id=self.store_id, how=verdict.how)
            elif isinstance(verdict, NotShared):
                log.error("store_not_shared", partner=partner, store_id=self.store_id, detail=verdict.detail)
            else:
                log.warning("store_sharing_unproven", partner=partner, store_id=self.store_id, detail=verdict.detail)
