"""allocate / release against a plain-Python model of the cluster (Hypothesis stateful testing).

Every step books or frees a placement on the real snapshot and on a dict-of-ints model; after each
step the snapshot's columns must equal the model, every booking together must pass `validate`
against the empty cluster (no capacity exceeded, MIG placements legal and disjoint), and any older
snapshot must still read exactly as it did when it was made.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from test_binpack_gen import clusters, demands, examples

from binpack import (
    Conflict,
    Demand,
    DemandKind,
    Node,
    Placement,
    Snapshot,
    allocate,
    fit,
    lookup,
    place,
    release,
    set_foreign,
    validate,
)
from binpack.catalog import FULL_MILLI


class Model:
    """Free capacity as plain ints, updated by hand from each placement."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.mem = {(n.name, g.index): g.memory_mib for n in nodes for g in n.gpus}
        self.comp = {(n.name, g.index): FULL_MILLI for n in nodes for g in n.gpus}
        self.slots = {(n.name, g.index): 0 for n in nodes for g in n.gpus}
        self.me = {(n.name, g.index): False for n in nodes for g in n.gpus}
        self.cpu = {n.name: n.cpu_milli for n in nodes}
        self.hmem = {n.name: n.memory_mib for n in nodes}
        self.foreign = {n.name: 0 for n in nodes}

    def apply(self, p: Placement, sign: int) -> None:
        node = self.nodes[p.node]
        self.cpu[p.node] -= sign * p.cpu_milli
        self.hmem[p.node] -= sign * p.host_memory_mib
        for g in p.gpus:
            key = (p.node, g)
            if p.kind is DemandKind.WHOLE:
                self.mem[key] -= sign * node.gpus[g].memory_mib
                self.comp[key] -= sign * FULL_MILLI
            else:
                self.mem[key] -= sign * p.memory_mib
                self.comp[key] -= sign * p.compute_milli
        for s in p.mig:
            key = (p.node, s.gpu)
            geom = lookup(node.gpus[s.gpu].model).mig  # type: ignore[union-attr]
            assert geom is not None
            prof = geom.profiles[s.profile]
            self.slots[key] ^= ((1 << prof.memory_slices) - 1) << s.start
            if prof.media_extension:
                self.me[key] = sign > 0

    def matches(self, snap: Snapshot) -> bool:
        st_ = snap.state()
        for (name, g), v in self.mem.items():
            i = snap.node_index(name)
            if (int(st_["mem_free"][i, g]), int(st_["compute_free"][i, g]), int(st_["mig_used"][i, g]),
                    bool(st_["me_used"][i, g])) != (v, self.comp[(name, g)], self.slots[(name, g)], self.me[(name, g)]):
                return False
        return all(
            (int(st_["cpu_free"][i]), int(st_["hmem_free"][i]), int(st_["foreign"][i]))
            == (self.cpu[n], self.hmem[n], self.foreign[n]) for i, n in enumerate(snap.names)
        )


class AllocateRelease(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.snap: Snapshot
        self.empty: Snapshot
        self.model: Model
        self.booked: list[tuple[Demand, Placement]] = []
        # (snapshot, its columns when made, what was booked and which foreign counts were set then)
        self.history: list[tuple[Snapshot, dict, object]] = []

    @initialize(cluster=clusters())
    def start(self, cluster: list[Node]) -> None:
        self.snap = self.empty = Snapshot.build(cluster)
        self.model = Model(cluster)
        self._remember()

    def _key(self) -> object:
        """The cluster state as a value: the multiset of bookings and the foreign counts."""
        return frozenset(Counter(p for _, p in self.booked).items()), tuple(sorted(self.model.foreign.items()))

    def _remember(self) -> None:
        self.history.append((self.snap, self.snap.state(), self._key()))

    @rule(d=demands(), pick=st.integers(0, 2))
    def book(self, d: Demand, pick: int) -> None:
        name = self.snap.names[pick % len(self.snap.names)]
        p = place(self.snap, d, name)
        assert (p is not None) == bool(fit(self.snap, d).fits[self.snap.node_index(name)])
        if p is None:
            return
        assert validate(self.snap, [(d, p)]) == []
        self.snap = allocate(self.snap, p)
        self.model.apply(p, +1)
        self.booked.append((d, p))
        self._remember()

    @precondition(lambda self: any(p.kind in (DemandKind.WHOLE, DemandKind.MIG) for _, p in self.booked))
    @rule(pick=st.integers(0, 100))
    def book_twice_conflicts(self, pick: int) -> None:
        devices = [p for _, p in self.booked if p.kind in (DemandKind.WHOLE, DemandKind.MIG)]
        try:
            allocate(self.snap, devices[pick % len(devices)])
        except Conflict:
            return
        raise AssertionError("booked the same devices twice")

    @precondition(lambda self: bool(self.booked))
    @rule(pick=st.integers(0, 100))
    def unbook(self, pick: int) -> None:
        _, p = self.booked.pop(pick % len(self.booked))
        self.snap = release(self.snap, p)
        self.model.apply(p, -1)
        # release restores exactly the earlier snapshots that had the same bookings and foreign pods
        earlier = [h[0] for h in self.history if h[2] == self._key()]
        assert all(self.snap.same_state(e) for e in earlier)
        self._remember()
        if p.kind in (DemandKind.WHOLE, DemandKind.MIG):
            try:
                release(self.snap, p)
            except Conflict:
                return
            raise AssertionError("freed devices that were not booked")

    @rule(d=demands(), pick=st.integers(0, 2))
    def round_trip(self, d: Demand, pick: int) -> None:
        p = place(self.snap, d, self.snap.names[pick % len(self.snap.names)])
        if p is not None:
            assert release(allocate(self.snap, p), p).same_state(self.snap)

    @rule(pick=st.integers(0, 2), gpus=st.integers(0, 2))
    def foreign(self, pick: int, gpus: int) -> None:
        name = self.snap.names[pick % len(self.snap.names)]
        self.snap = set_foreign(self.snap, name, gpus)
        self.model.foreign[name] = gpus
        self._remember()

    @precondition(lambda self: len(self.history) > 1)
    @rule(pick=st.integers(0, 1000))
    def old_snapshots_read_the_same(self, pick: int) -> None:
        snap, cols, _ = self.history[pick % len(self.history)]
        now = snap.state()
        assert all((now[k] == v).all() for k, v in cols.items())

    @invariant()
    def columns_match_the_model(self) -> None:
        assert self.model.matches(self.snap)

    @invariant()
    def derived_columns_follow(self) -> None:
        """free_milli and whole_bits, kept by allocate/release, equal their definition."""
        cols = self.snap.state()
        for i, node in enumerate(self.snap.static.nodes):
            bits = 0
            for g in node.gpus:
                plain = g.healthy and g.mig_mode.value == 0
                mem, comp = int(cols["mem_free"][i, g.index]), int(cols["compute_free"][i, g.index])
                milli = min(comp, mem * FULL_MILLI // g.memory_mib) if plain else 0
                assert int(cols["free_milli"][i, g.index]) == milli
                bits |= (milli == FULL_MILLI) << g.index
            assert int(cols["whole_bits"][i]) == bits

    @invariant()
    def bookings_are_valid_together(self) -> None:
        assert validate(self.empty, self.booked) == []


AllocateRelease.TestCase.settings = examples(60)
test_allocate_release = AllocateRelease.TestCase
