"""Speed and accuracy of the pair expectations behind ``meanfield.finite_width_corrections`` against
``scipy.integrate.dblquad``.

Run from the repository root::

    python benchmarks/finite_width_vs_scipy.py [--activation tanh]

What is timed (same process, same covariance): the covariance ``S`` of the products phi(u)^2, phi(u)phi(v),
phi(v)^2 and the derivatives ``J``, ``H`` of their means for one pair (15 distinct Gaussian integrals), by
``meanfield.finite_width._pair`` (one node set of the engine's nested rule, all integrands on it; after a warm-up
call so that numba compilation is not counted) and by ``scipy.integrate.dblquad`` on the same integrands in the
standard-normal variables (one adaptive integral each, default tolerances). Also timed: one whole
``finite_width_corrections`` call (4 Dense layers, 2 inputs). Printed: the speed ratio scipy / meanfield and the
largest difference.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
from scipy import integrate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import meanfield as mf  # noqa: E402
from meanfield.finite_width import _pair, _Single  # noqa: E402


def scipy_pair(act, Kuu, Kuv, Kvv):
    su, sv = math.sqrt(Kuu), math.sqrt(Kvv)
    c = Kuv / (su * sv)
    s = math.sqrt(1 - c * c)
    det = Kuu * Kvv - Kuv * Kuv
    Puu, Puv, Pvv = Kvv / det, -Kuv / det, Kuu / det
    phi, dphi = act.phi, act.dphi

    def E(g):
        f = lambda z2, z1: g(su * z1, sv * (c * z1 + s * z2)) * math.exp(-(z1 * z1 + z2 * z2) / 2) / (2 * math.pi)  # noqa: E731
        return integrate.dblquad(f, -10, 10, -10, 10)[0]

    yu = lambda u, v: Puu * u + Puv * v       # noqa: E731
    yv = lambda u, v: Puv * u + Pvv * v       # noqa: E731
    vals = [E(lambda u, v: phi(u) * phi(v)), E(lambda u, v: phi(u) ** 3 * phi(v)),
            E(lambda u, v: phi(u) ** 2 * phi(v) ** 2), E(lambda u, v: phi(u) * phi(v) ** 3),
            E(lambda u, v: dphi(u) * dphi(v)), E(lambda u, v: 0.5 * dphi(u) * phi(v) * yu(u, v)),
            E(lambda u, v: 0.5 * phi(u) * dphi(v) * yv(u, v)),
            E(lambda u, v: dphi(u) * dphi(v) * (yu(u, v) * yv(u, v) - Puv)),
            E(lambda u, v: 0.5 * dphi(u) * dphi(v) * (yu(u, v) ** 2 - Puu)),
            E(lambda u, v: 0.25 * dphi(u) * phi(v) * (yu(u, v) ** 3 - 3 * Puu * yu(u, v)))]
    return vals


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--activation", default="tanh")
    a = p.parse_args(argv)
    act = mf.get_activation(a.activation)
    K = (0.9, 0.35, 1.4)
    su, sv = _Single(act, K[0]), _Single(act, K[2])
    _pair(act, *K, su, sv)                     # warm-up (numba)
    t = time.perf_counter()
    n_rep = 5
    for _ in range(n_rep):
        f, S, J, H, _ = _pair(act, *K, su, sv)
    t_mf = (time.perf_counter() - t) / n_rep
    ours = [f[1], S[0, 1] + su.f * f[1], S[0, 2] + su.f * sv.f, S[1, 2] + f[1] * sv.f, J[1, 1], J[1, 0], J[1, 2],
            H[1, 1, 1], H[1, 0, 1], H[1, 0, 0]]
    t = time.perf_counter()
    ref = scipy_pair(act, *K)
    t_sp = time.perf_counter() - t
    diff = max(abs(x - y) for x, y in zip(ours, ref))
    print(f"{a.activation}: one pair, 15 integrals: meanfield {t_mf * 1e3:.1f} ms, scipy dblquad (10 of them) "
          f"{t_sp * 1e3:.0f} ms; speed ratio >= {t_sp / t_mf:.0f}; largest difference {diff:.1e}")
    net = mf.Network(a.activation, depth=3, weight_var=1.5, bias_var=0.1)
    t = time.perf_counter()
    mf.finite_width_corrections(net, gram=[[1.0, 0.5], [0.5, 1.0]])
    print(f"finite_width_corrections, 4 Dense layers, 2 inputs: {1e3 * (time.perf_counter() - t):.0f} ms")


if __name__ == "__main__":
    main()
