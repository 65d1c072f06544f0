"""Plausibility checks: what a facility scientist must be told about a result, never silent.

:func:`plausibility_warnings` looks at one image's calibration and measured
particles and returns structured :class:`Warning_` records (a stable ``code``,
the image, a one-line message). The pipeline decides how to surface them (CLI
line, gRPC progress event, report); nothing here prints.

:func:`check_calibration_consistency` is called *before* any work on a batch:
a sample that mixes calibrated and uncalibrated images cannot be pooled into
one table, so it is refused up front with the names of the offenders.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

from ..errors import UserInputError
from ._io import Calibration

__all__ = ["Warning_", "plausibility_warnings", "check_calibration_consistency", "MixedCalibrationError",
           "PLAUSIBLE_PIXEL_NM", "PLAUSIBLE_ECD_PX",
           "PLAUSIBLE_PARTICLE_NM"]

#: pixel sizes (nm) an electron micrograph of particles can have: 1 pm (atomic-resolution STEM) to 2 um (low-mag SEM)
PLAUSIBLE_PIXEL_NM = (1e-3, 2e3)
#: median particle diameter (nm) that can be a particle: 1 nm (a few atoms) to 1 mm
PLAUSIBLE_PARTICLE_NM = (1.0, 1e6)
#: median equivalent circle diameter in px of a segmentation that resolved particles: below 3 px they are noise,
#: above the image's short side / 1.5 they fill the field
PLAUSIBLE_ECD_PX = 3.0


@dataclass(frozen=True)
class Warning_:
    """One plausibility warning.

    Attributes
    ----------
    code : str
        Stable identifier: ``no_particles``, ``uncalibrated``,
        ``pixel_size_implausible``, ``particle_size_implausible``,
        ``particles_tiny``, ``particles_huge``, ``few_particles``,
        ``calibrated_from_scale_bar`` (information: the file had no pixel size).
    image : str
        Image name the warning is about.
    message : str
        One line for a person, with the numbers and what to do.
    """

    code: str
    image: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def __str__(self) -> str:
        return f"warning [{self.code}] {self.image or '(sample)'}: {self.message}"


class MixedCalibrationError(UserInputError):
    """A batch mixes calibrated and uncalibrated images (or different units)."""


def _ecd_px(p: dict[str, Any], pixel_size_nm: float | None) -> float | None:
    """ECD in px of a particle row, whatever the column naming (``ecd``, ``ecd_nm``, ``ecd_px``)."""
    if "ecd_px" in p:
        return float(p["ecd_px"])
    if "ecd_nm" in p and pixel_size_nm:
        return float(p["ecd_nm"]) / pixel_size_nm
    if "ecd" in p:  # unit-free naming: value in the table's unit
        return float(p["ecd"]) / pixel_size_nm if pixel_size_nm else float(p["ecd"])
    if "area_px2" in p:
        return math.sqrt(4 * float(p["area_px2"]) / math.pi)
    return None


def plausibility_warnings(*, image: str, calibration: Calibration, particles: Sequence[dict[str, Any]] | None = None,
                          image_shape: tuple[int, int] | None = None, min_count: int = 0,
                          min_diameter_nm: float | None = None) -> list[Warning_]:
    """Warnings about one analysed image.

    Parameters
    ----------
    image : str
        Name used in the messages.
    calibration : Calibration
        The pixel size used and its source.
    particles : list of dict, optional
        The particle rows (excluded ones are skipped when they carry
        ``excluded``). ``None``: only the calibration is checked (before the
        analysis).
    image_shape : (H, W), optional
        Used for the "particles fill the image" check.
    min_count : int
        Warn when fewer included particles were found (0: no such check).
    min_diameter_nm : float, optional
        The size filter used (``MeasureOptions.min_diameter_nm``); explains
        an empty result when it is many pixels wide.

    Returns
    -------
    list of Warning_
        Empty when nothing looks wrong.

    Notes
    -----
    A pixel size typed in um instead of nm is 1000x too large: the particles
    then measure tens of um, and the size filter in nm (``min_diameter_nm``)
    is no longer what removes the noise. It is caught twice: the pixel size
    itself outside ``PLAUSIBLE_PIXEL_NM`` (for gross slips), the analysis
    finding no particles (the size filter became dozens of px wide), and
    particles whose median diameter in nm is outside ``PLAUSIBLE_PARTICLE_NM``. Particles of median ECD under ``PLAUSIBLE_ECD_PX`` px mean
    the image was not resolved (or the segmenter found noise).
    """
    out: list[Warning_] = []
    px = calibration.pixel_size_nm
    if px is None:
        out.append(Warning_("uncalibrated", image,
                            "no pixel size in the file and none given: sizes are in px, not nm "
                            "(give --pixel-size-nm NM or a calibrated file)"))
    elif calibration.source == "scalebar":
        out.append(Warning_("calibrated_from_scale_bar", image,
                            f"no pixel size in the file: {px:.4g} nm/px was read from the scale bar in the data bar"))
    if px is not None and not PLAUSIBLE_PIXEL_NM[0] <= px <= PLAUSIBLE_PIXEL_NM[1]:
        hint = ""
        if px > PLAUSIBLE_PIXEL_NM[1]:
            hint = " (was it given in pm or A? the value must be in nm)"
        elif px < PLAUSIBLE_PIXEL_NM[0]:
            hint = f" (was it given in um or mm? {px:g} um would be {px * 1000:g} nm; the value must be in nm)"
        out.append(Warning_("pixel_size_implausible", image,
                            f"pixel size {px:g} nm (from {calibration.source}) is outside the plausible "
                            f"{PLAUSIBLE_PIXEL_NM[0]:g}-{PLAUSIBLE_PIXEL_NM[1]:g} nm for an electron micrograph{hint}"))
    if particles is None:
        return out
    inc = [p for p in particles if not p.get("excluded", False)]
    if not inc:
        why = ""
        if px and min_diameter_nm and min_diameter_nm / px > 30:
            why = (f"; at {px:g} nm/px the minimum diameter {min_diameter_nm:g} nm is {min_diameter_nm / px:.0f} px "
                   "-- was the pixel size given in um instead of nm?")
        out.append(Warning_("no_particles", image,
                            "no particles were found: check the pixel size (nm), the modality and the image "
                            f"contrast (a blank or saturated image gives none){why}"))
        return out
    if min_count and len(inc) < min_count:
        out.append(Warning_("few_particles", image,
                            f"only {len(inc)} particles measured; {min_count} are needed for the requested "
                            "statistics"))
    ecds = sorted(e for e in (_ecd_px(p, px) for p in inc) if e is not None)
    if ecds:
        med = ecds[len(ecds) // 2]
        if med < PLAUSIBLE_ECD_PX:
            out.append(Warning_("particles_tiny", image,
                                f"median particle diameter is {med:.1f} px: particles this small are not resolved "
                                "(noise, or the wrong magnification)"))
        if px and not PLAUSIBLE_PARTICLE_NM[0] <= med * px <= PLAUSIBLE_PARTICLE_NM[1]:
            out.append(Warning_("particle_size_implausible", image,
                                f"median particle diameter {med * px:g} nm at {px:g} nm/px (from {calibration.source}) "
                                f"is outside {PLAUSIBLE_PARTICLE_NM[0]:g}-{PLAUSIBLE_PARTICLE_NM[1]:g} nm: is the pixel "
                                "size in the right unit (nm)?"))
        if image_shape is not None and med > min(image_shape) / 1.5:
            out.append(Warning_("particles_huge", image,
                                f"median particle diameter is {med:.0f} px, as large as the image "
                                f"({image_shape[1]}x{image_shape[0]} px): is the foreground inverted?"))
    return out


def check_calibration_consistency(calibrations: Iterable[tuple[str, Calibration]]) -> None:
    """Refuse, before any work, a batch that mixes calibrated and uncalibrated images.

    Parameters
    ----------
    calibrations : iterable of (name, Calibration)
        Every image of the batch with its resolved calibration.

    Raises
    ------
    MixedCalibrationError
        With the uncalibrated images named (at most five) and what to do.
    """
    items = list(calibrations)
    cal = [n for n, c in items if c.calibrated]
    unc = [n for n, c in items if not c.calibrated]
    if cal and unc:
        shown = ", ".join(unc[:5]) + (f" and {len(unc) - 5} more" if len(unc) > 5 else "")
        raise MixedCalibrationError(
            f"{len(unc)} of {len(items)} images have no pixel size ({shown}) while the others are calibrated: "
            "one sample table needs one unit; give --pixel-size-nm NM or analyse them separately", field="images")
