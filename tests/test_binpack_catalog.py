"""The catalog against tests/data/shared/reference/mig.md: profiles, slices, caps and legal starts per model."""

from __future__ import annotations

import pytest

from binpack import CATALOG, canonical_model, lookup
from binpack.catalog import mig_profile_names, normalize_model_name

EIGHT = {  # slot layout shared by A100, H100, H200 (mig.md section 1): (compute, memory, max, starts)
    "1g": (1, 1, 7, (0, 1, 2, 3, 4, 5, 6)),
    "1g+me": (1, 1, 1, (0, 1, 2, 3, 4, 5, 6)),
    "1g2x": (1, 2, 4, (0, 2, 4, 6)),
    "2g": (2, 2, 3, (0, 2, 4)),
    "3g": (3, 4, 2, (0, 4)),
    "4g": (4, 4, 1, (0,)),
    "7g": (7, 8, 1, (0,)),
}
NAMES = {  # mig.md "Per-model names": 1g, 1g+me, 1g 2-slice, 2g, 3g, 4g, 7g
    "A100-SXM4-40GB": ("1g.5gb", "1g.5gb+me", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"),
    "A100-SXM4-80GB": ("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H100-SXM5-80GB": ("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H200-141GB": ("1g.18gb", "1g.18gb+me", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"),
}


@pytest.mark.parametrize("model", sorted(NAMES))
def test_eight_slot_models(model: str) -> None:
    geom = CATALOG[model].mig
    assert geom is not None and geom.memory_slices == 8 and geom.compute_slices == 7
    assert set(geom.profiles) == set(NAMES[model])
    for name, key in zip(NAMES[model], EIGHT, strict=True):
        p = geom.profiles[name]
        assert (p.compute_slices, p.memory_slices, p.max_count, p.starts) == EIGHT[key], name
        assert p.media_extension == (key == "1g+me")


def test_a30_profiles_and_starts() -> None:
    geom = CATALOG["A30-24GB"].mig
    assert geom is not None and geom.memory_slices == 4 and geom.compute_slices == 4
    got = {n: (p.compute_slices, p.memory_slices, p.max_count, p.starts, p.media_extension, p.memory_mib)
           for n, p in geom.profiles.items()}
    assert got == {
        "1g.6gb": (1, 1, 4, (0, 1, 2, 3), False, 5836),
        "1g.6gb+me": (1, 1, 1, (0, 1, 2, 3), True, 5836),
        "2g.12gb": (2, 2, 2, (0, 2), False, 11672),
        "2g.12gb+me": (2, 2, 1, (0, 2), True, 11672),
        "4g.24gb": (4, 4, 1, (0,), False, 23344),
    }


@pytest.mark.parametrize(("profile", "masks"), [
    ("3g.40gb", (0x0F, 0xF0)), ("4g.40gb", (0x0F,)), ("7g.80gb", (0xFF,)),
    ("1g.20gb", (0x03, 0x0C, 0x30, 0xC0)), ("2g.20gb", (0x03, 0x0C, 0x30)),
    ("1g.10gb", tuple(1 << s for s in range(7))),  # never slot 7 (R4)
])
def test_masks_are_the_memory_slices_covered(profile: str, masks: tuple[int, ...]) -> None:
    geom = CATALOG["H100-SXM5-80GB"].mig
    assert geom is not None and geom.profiles[profile].masks() == masks


def test_same_name_is_a_different_geometry_on_another_model() -> None:
    """1g.10gb is one memory slice on an 80 GB part but the 2-slice 1g on a 40 GB part (mig.md)."""
    a40, a80 = CATALOG["A100-SXM4-40GB"].mig, CATALOG["A100-SXM4-80GB"].mig
    assert a40 is not None and a80 is not None
    assert a40.profiles["1g.10gb"].memory_slices == 2 and a80.profiles["1g.10gb"].memory_slices == 1


@pytest.mark.parametrize(("raw", "canonical"), [
    ("NVIDIA A100-SXM4-80GB", "A100-SXM4-80GB"), ("NVIDIA-A100-SXM4-80GB", "A100-SXM4-80GB"),
    ("NVIDIA H100 80GB HBM3", "H100-SXM5-80GB"), ("Tesla-T4", "T4"), ("NVIDIA-H200", "H200-141GB"),
    ("a30", "A30-24GB"), ("Some New GPU", "SOME-NEW-GPU"),
])
def test_model_names_fold_to_the_catalog(raw: str, canonical: str) -> None:
    assert canonical_model(raw) == canonical


def test_memory_and_unknown_models() -> None:
    assert [CATALOG[m].memory_mib for m in ("A100-SXM4-40GB", "A100-SXM4-80GB", "H200-141GB")] == [40960, 81920, 143771]
    assert lookup("Some New GPU") is None and CATALOG["T4"].mig is None
    assert "3g.40gb" in mig_profile_names() and "3g.41gb" not in mig_profile_names()
    assert normalize_model_name("  nvidia  l4 ") == "L4"
    with pytest.raises(ValueError, match="model"):
        canonical_model("  ")
    geom = CATALOG["H100-SXM5-80GB"].mig
    assert geom is not None
    with pytest.raises(ValueError, match=r"5g\.50gb"):
        geom.profile("5g.50gb")
