"""Imaging modalities and what follows from each (one place for the "dark particles" rule)."""

from __future__ import annotations

import enum

from .errors import InvalidOption

__all__ = ["Modality", "MODALITIES"]


class Modality(enum.StrEnum):
    """The imaging mode of a micrograph; compares equal to its lower-case name (``Modality.SE == "se"``)."""

    SE = "se"
    STEM = "stem"
    TEM = "tem"
    HIM = "him"

    @property
    def dark_particles(self) -> bool:
        """Transmission modes (STEM/TEM bright field) show particles darker than the background."""
        return self in (Modality.STEM, Modality.TEM)

    @property
    def transmission(self) -> bool:
        return self.dark_particles

    @property
    def shape_classes(self) -> tuple[str, ...]:
        """Shape classes of the seed paper: 3-D names for SE/HIM, projected 2-D names for STEM/TEM."""
        if self.transmission:
            return ("circle", "rod", "square", "triangle", "hexagon")
        return ("sphere", "sphere-like", "rod", "cube")

    @classmethod
    def parse(cls, value: "str | Modality", *, field: str = "modality") -> "Modality":
        """The modality named ``value`` (case-insensitive); :class:`InvalidOption` lists the valid names."""
        try:
            return cls(str(value).lower())
        except ValueError:
            raise InvalidOption(f"unknown modality {value!r}; valid: {', '.join(MODALITIES)}", field=field) from None


MODALITIES: tuple[str, ...] = tuple(m.value for m in Modality)
