"""Tissue classes and species optics of the simulated surgical scenes
(:mod:`drivers.sim.scene`, whose module docstring describes both): the class ids and mean
tissue parameters, and the species presets of the xeno-learning study with the per-class
melanin weights.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from edge.errors import ConfigError

__all__ = ["SCENE_CLASSES", "CLASS_PARAMS", "MELANIN_WEIGHT", "SPECIES", "DEFAULT_SPECIES",
           "Species", "get_species"]

#: Class names; the index is the class id stored in ``truth["classes"]``.
SCENE_CLASSES: tuple[str, ...] = ("background", "liver", "bowel", "stomach", "fat", "muscle",
                                  "malperfused")

#: Mean tissue parameters per class: sto2, blood_volume, water, fat, scatter_a, scatter_b.
CLASS_PARAMS: dict[str, tuple[float, float, float, float, float, float]] = {
    "liver": (0.70, 0.050, 0.75, 0.05, 15.0, 1.0),
    "bowel": (0.78, 0.030, 0.80, 0.05, 20.0, 1.3),
    "stomach": (0.74, 0.035, 0.78, 0.08, 22.0, 1.2),
    "fat": (0.80, 0.008, 0.50, 0.30, 28.0, 1.1),
    "muscle": (0.65, 0.040, 0.75, 0.02, 12.0, 1.5),
    "malperfused": (0.55, 0.045, 0.78, 0.05, 20.0, 1.3),
}


@dataclass(frozen=True)
class Species:
    """Tissue-optics modifiers of one species, applied to every class mean of
    :data:`CLASS_PARAMS` (then texture is added and the result clipped to the physiological
    limits, FACTS.md "Physiological ranges").

    Attributes
    ----------
    name : str
        Preset name.
    scatter_scale : float
        Multiplier of the reduced-scattering amplitude a′ = µs′(500 nm), 0.25-4.
    scatter_b_offset : float
        Added to the scattering power b, -1 to 1.
    blood_scale : float
        Multiplier of the baseline blood volume fraction B, 0.2-5 (StO2 is not changed: the
        study is about optics, not physiology).
    fat_offset, water_offset : float
        Added to the fat and water volume fractions, -0.3 to 0.3.
    melanin : float
        Melanin volume fraction M at class weight 1 (:data:`MELANIN_WEIGHT`), 0-0.05; 0 adds
        no melanin term at all (so the default renders exactly as before).
    """

    name: str
    scatter_scale: float = 1.0
    scatter_b_offset: float = 0.0
    blood_scale: float = 1.0
    fat_offset: float = 0.0
    water_offset: float = 0.0
    melanin: float = 0.0

    def __post_init__(self) -> None:
        limits = {"scatter_scale": (0.25, 4.0), "scatter_b_offset": (-1.0, 1.0),
                  "blood_scale": (0.2, 5.0), "fat_offset": (-0.3, 0.3),
                  "water_offset": (-0.3, 0.3), "melanin": (0.0, 0.05)}
        for f in fields(self):
            if f.name == "name":
                continue
            v = getattr(self, f.name)
            lo, hi = limits[f.name]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ConfigError(f"species {self.name!r}: {f.name} must be a number in "
                                  f"[{lo:g}, {hi:g}], got {v!r}")

    def class_means(self, name: str) -> tuple[float, float, float, float, float, float]:
        """:data:`CLASS_PARAMS` of class ``name`` with this species' modifiers applied."""
        s, b, w, f, a, bb = CLASS_PARAMS[name]
        # x*1.0 and x+0.0 are exact in IEEE arithmetic: the identity species changes no bit.
        return (s, b * self.blood_scale, w + self.water_offset, f + self.fat_offset,
                a * self.scatter_scale, bb + self.scatter_b_offset)


#: Melanin weight per class (fraction of :attr:`Species.melanin`).  Real melanin sits in skin
#: only (FACTS.md); the scene has no skin class, so melanin's smooth absorption that rises to
#: the blue stands in for the brown tissue pigments whose load differs between species and
#: organs (lipofuscin and bile pigments: most in liver, least in fat).
MELANIN_WEIGHT: dict[str, float] = {"liver": 1.0, "bowel": 0.5, "stomach": 0.5, "fat": 0.1,
                                    "muscle": 0.6, "malperfused": 0.5}

#: Species presets.  ``pig`` is the reference optics of :data:`CLASS_PARAMS` (the identity),
#: named so because the xeno-learning study trains on animals.  The others move the optics
#: inside the published soft-tissue spread (FACTS.md: a′ 18.9 ± 10.2 cm⁻¹, b 1.286 ± 0.521,
#: B 0.5-6.5 %, F 0-0.3, W 0.5-0.8):
#:
#: - ``human``: more visceral fat (+0.06) and a little less water (-0.03) in older surgical
#:   patients, lower scattering amplitude (×0.8) with a flatter slope (b -0.15), less
#:   baseline blood volume under anaesthesia (×0.8), and pigment (M 0.0015 at weight 1, i.e.
#:   µa,mel ≈ 0.4 cm⁻¹ at 665 nm in liver -- comparable to the blood term).
#: - ``rat``: lean (fat -0.03), thin strongly scattering tissue (a′ ×1.2, b +0.1), higher
#:   blood volume (×1.25), no pigment.
SPECIES: dict[str, Species] = {
    "pig": Species("pig"),
    "human": Species("human", scatter_scale=0.8, scatter_b_offset=-0.15, blood_scale=0.8,
                     fat_offset=0.06, water_offset=-0.03, melanin=0.0015),
    "rat": Species("rat", scatter_scale=1.2, scatter_b_offset=0.1, blood_scale=1.25,
                   fat_offset=-0.03),
}
#: The species of a scene built without one (reproduces the original scenes exactly).
DEFAULT_SPECIES = "pig"


def get_species(species: "str | Species") -> Species:
    """A :class:`Species` from a preset name (or pass one through).

    Raises
    ------
    ConfigError
        For an unknown name (lists the presets) or a value of the wrong type.
    """
    if isinstance(species, Species):
        return species
    if isinstance(species, str) and species in SPECIES:
        return SPECIES[species]
    raise ConfigError(f"species: expected one of {', '.join(SPECIES)} or a Species, "
                      f"got {species!r}")
