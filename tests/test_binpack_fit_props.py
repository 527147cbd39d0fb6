"""Property tests of fit and place against the brute-force oracle built on `validate`.

fit says "fits" on a node exactly when some valid placement exists there; place then returns one
that validate accepts; "resolvable" means exactly "fits once the node is empty again".
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from test_binpack_gen import FAST, clusters, demands, empty_like, fits_somewhere, mixes, states

from binpack import Demand, fit, place, validate


@FAST
@given(data=st.data())
def test_fit_is_exact_and_place_validates(data: st.DataObject) -> None:
    snap = data.draw(states(data.draw(clusters())))
    d: Demand = data.draw(demands())
    mix = data.draw(mixes())
    verdict = fit(snap, d)
    for i, name in enumerate(snap.names):
        exists = fits_somewhere(snap, d, name)
        assert bool(verdict.fits[i]) == exists, (name, verdict.message(i), d)
        p = place(snap, d, name, mix)
        assert (p is not None) == exists
        if p is not None:
            assert validate(snap, [(d, p)]) == []
            assert verdict.message(i) == ""
        else:
            assert verdict.message(i)


@FAST
@given(data=st.data())
def test_resolvable_means_fits_on_the_empty_node(data: st.DataObject) -> None:
    snap = data.draw(states(data.draw(clusters())))
    d: Demand = data.draw(demands())
    now, empty = fit(snap, d), fit(empty_like(snap), d)
    for i in range(len(snap.names)):
        if not now.fits[i]:
            assert bool(now.resolvable[i]) == bool(empty.fits[i]), (now.message(i), d)
