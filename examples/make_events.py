"""Write a demo table of synthetic collider events for configs/realnvp/tabular.yaml (no download).

Each row is a two-body decay X -> l1 l2 of a resonance of mass M drawn from a Breit-Wigner (Cauchy) of width Gamma
(default 91.19 and 2.50 GeV, a Z boson; truncated to M +- 15 Gamma), produced with a transverse momentum from a
Gamma(2, 5 GeV) distribution (mean 10 GeV), rapidity ~ N(0, 1.5^2) and a uniform azimuth, decaying isotropically in
its rest frame to two massless leptons. The leptons' pT get a 2 % Gaussian detector smearing. Columns:
``pt1, eta1, phi1, pt2, eta2, phi2`` (GeV, -, rad; lepton 1 has the larger pT) and ``mass``, the invariant mass
of the pair computed from them (:func:`invariant_mass`). pT peaks near M/2 (the Jacobian peak), the two
leptons are almost back to back in phi, and their etas are correlated: a non-Gaussian, correlated table.

    python examples/make_events.py                      # 100,000 events -> data/events.csv ($LIGHTNING_GEN_DATA)
    python examples/make_events.py --num 20000 --out my_events.csv
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

COLUMNS = ("pt1", "eta1", "phi1", "pt2", "eta2", "phi2", "mass")


def invariant_mass(pt1, eta1, phi1, pt2, eta2, phi2):
    """Invariant mass of two massless particles (numpy arrays): ``sqrt(2 pt1 pt2 (cosh(deta) - cos(dphi)))``."""
    m2 = 2 * pt1 * pt2 * (np.cosh(eta1 - eta2) - np.cos(phi1 - phi2))
    return np.sqrt(np.maximum(m2, 0.0))


def _boost(p4: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Lorentz-boost four-vectors ``(E, px, py, pz)`` (N, 4) by velocities ``beta`` (N, 3)."""
    b2 = (beta**2).sum(1)
    gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = (beta * p4[:, 1:]).sum(1)
    coef = np.where(b2 > 0, (gamma - 1.0) / np.where(b2 > 0, b2, 1.0), 0.0)
    energy = gamma * (p4[:, 0] + bp)
    momentum = p4[:, 1:] + (coef * bp + gamma * p4[:, 0])[:, None] * beta
    return np.concatenate([energy[:, None], momentum], axis=1)


def make_events(num: int, mass: float = 91.19, width: float = 2.50, seed: int = 0) -> np.ndarray:
    """``num`` events ``(num, 7)`` with the columns :data:`COLUMNS` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    # Breit-Wigner masses by inverting the Cauchy CDF on the truncated range
    lo, hi = (math.atan(-15.0), math.atan(15.0))
    m = mass + 0.5 * width * np.tan(rng.uniform(lo, hi, num))
    pt = rng.gamma(2.0, 5.0, num)
    y = rng.normal(0.0, 1.5, num)
    phi = rng.uniform(-math.pi, math.pi, num)
    mt = np.sqrt(m**2 + pt**2)
    resonance = np.stack([mt * np.cosh(y), pt * np.cos(phi), pt * np.sin(phi), mt * np.sinh(y)], axis=1)
    # isotropic decay in the rest frame: back-to-back leptons of energy m/2
    cos_t = rng.uniform(-1.0, 1.0, num)
    sin_t = np.sqrt(1.0 - cos_t**2)
    phi_star = rng.uniform(-math.pi, math.pi, num)
    direction = np.stack([sin_t * np.cos(phi_star), sin_t * np.sin(phi_star), cos_t], axis=1)
    half = (m / 2)[:, None]
    beta = resonance[:, 1:] / resonance[:, :1]
    leptons = [_boost(np.concatenate([half, sign * half * direction], axis=1), beta) for sign in (1.0, -1.0)]
    kinematics = []
    for p4 in leptons:
        lpt = np.hypot(p4[:, 1], p4[:, 2]) * (1.0 + 0.02 * rng.standard_normal(num))
        eta = np.arcsinh(p4[:, 3] / np.hypot(p4[:, 1], p4[:, 2]))
        kinematics.append((lpt, eta, np.arctan2(p4[:, 2], p4[:, 1])))
    (pt_a, eta_a, phi_a), (pt_b, eta_b, phi_b) = kinematics
    lead = pt_a >= pt_b
    pt1, pt2 = np.where(lead, pt_a, pt_b), np.where(lead, pt_b, pt_a)
    eta1, eta2 = np.where(lead, eta_a, eta_b), np.where(lead, eta_b, eta_a)
    phi1, phi2 = np.where(lead, phi_a, phi_b), np.where(lead, phi_b, phi_a)
    table = np.stack([pt1, eta1, phi1, pt2, eta2, phi2, invariant_mass(pt1, eta1, phi1, pt2, eta2, phi2)], axis=1)
    return table


def default_path() -> Path:
    """Where :class:`~lightning_gen.data.TabularDataModule` looks when ``path`` is left out."""
    from lightning_gen.data.root import default_data_root

    return default_data_root() / "events.csv"


def main(argv: list[str] | None = None) -> Path:
    """Write the table the command line asks for and return its path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=100_000, help="number of events (rows)")
    parser.add_argument("--out", default=None,
                        help="CSV to write (default: events.csv in $LIGHTNING_GEN_DATA, else data/)")
    parser.add_argument("--mass", type=float, default=91.19, help="resonance mass M in GeV")
    parser.add_argument("--width", type=float, default=2.50, help="Breit-Wigner width Gamma in GeV")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else default_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    table = make_events(args.num, args.mass, args.width, args.seed)
    np.savetxt(out, table, fmt="%.6g", delimiter=",", header=",".join(COLUMNS), comments="")
    print(f"wrote {len(table)} events with columns {', '.join(COLUMNS)} to {out}")
    return out


if __name__ == "__main__":
    main()
