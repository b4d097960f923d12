"""What a set of samples on the sphere says: its density, its modes, and how concentrated it is.

Both methods only draw samples, so the density they stand for is read off the samples with a
von Mises-Fisher kernel estimate. Its width is chosen per answer by leave-one-out likelihood
over a fixed ladder of radii: tight clusters get a narrow kernel, scattered samples a wide one.
The modes are the kernel estimate's local maxima (spherical mean-shift), and the mean
log-density of the estimate at the samples themselves, leave-one-out, measures how localizable
the photo is: it is high when the samples agree on one small place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geoloc.geo.mixtures import Mode, find_modes
from geoloc.geo.vmf import vmf_kappa_for_radius_km

# Half-mass radii the kernel may take: 5 km to 7240 km (a uniform sphere's is 10 000), a factor √2 apart.
RADII_KM = 5.0 * np.sqrt(2.0) ** np.arange(22)
KAPPAS = vmf_kappa_for_radius_km(RADII_KM)
# The width and the mean log-density are read from at most this many samples: the pairwise
# terms grow as n², and the samples are independent, so the first ones are a fair subset.
BANDWIDTH_SAMPLES = 512


@dataclass(frozen=True)
class SampleSummary:
    """The modes of a sample set (highest density first), its kernel width, and mean log-density."""

    modes: list[Mode]
    radius_km: float
    mean_log_density: float


def leave_one_out_log_densities(xyz: np.ndarray, kappas: np.ndarray) -> np.ndarray:
    """log of each kernel estimate of the other samples at each sample: [len(kappas), n], nats per steradian."""
    n = len(xyz)
    one_minus_cos = np.clip(1.0 - xyz @ xyz.T, 0.0, 2.0)
    np.fill_diagonal(one_minus_cos, np.inf)
    k = np.asarray(kappas, dtype=np.float64)[:, None, None]
    # vMF per steradian: κ / (2π (1 − e^{−2κ})) e^{−κ(1 − cos)}; the nearest neighbour's term
    # is factored out so that the sum neither overflows nor underflows.
    nearest = one_minus_cos.min(axis=1)[None, :]
    kernel_sum = np.exp(-k * (one_minus_cos - nearest[..., None])).sum(axis=2)
    log_norm = np.log(k[:, :, 0]) - np.log(-np.expm1(-2.0 * k[:, :, 0])) - np.log(2 * np.pi)
    return log_norm - k[:, :, 0] * nearest + np.log(kernel_sum) - np.log(n - 1)


def summarize_samples(xyz: np.ndarray, merge_km: float | None = None) -> SampleSummary:
    """Kernel width by leave-one-out likelihood, then modes and the mean log-density; xyz [n, 3], n >= 2."""
    xyz = np.asarray(xyz, dtype=np.float64)
    if len(xyz) < 2:
        raise ValueError("a sample summary needs at least two samples")
    scores = leave_one_out_log_densities(xyz[:BANDWIDTH_SAMPLES], KAPPAS).mean(axis=1)
    best = int(np.argmax(scores))
    radius, kappa = float(RADII_KM[best]), float(KAPPAS[best])
    modes = find_modes(xyz, np.full(len(xyz), 1.0 / len(xyz)), kappa, merge_km=merge_km or radius)
    return SampleSummary(modes, radius, float(scores[best]))
