"""Brute-force reference for convolutional chains at infinite width, independent of meanfield.spatial.

The covariance of all (input, position) units is one dense matrix over the index ``n * P + p``; each linear layer is
an explicit matrix built position by position (a Conv is the sum over its filter taps ``d`` of the selection matrices
``A_d``, ``(A_d)_{o, i} = 1`` when input position ``i`` feeds output ``o`` through tap ``d``), so
``K_out = (w / |F|) sum_d (I_N x A_d) K (I_N x A_d)^T + b``. Nonlinearities use the arc-cosine (relu, Cho & Saul
2009) and arcsine (erf, Williams 1997) closed forms entry by entry in plain Python. Shapes stay tiny (N P <= ~100).
"""
from __future__ import annotations

import itertools
import math

import numpy as np


def _lo(n, k, s, padding):
    """lax's SAME convention: n_out = ceil(n / s), total padding max((n_out - 1) s + k - n, 0), left half floor."""
    if padding == "VALID":
        return (n - k) // s + 1, 0
    n_out = -(-n // s)
    return n_out, max((n_out - 1) * s + k - n, 0) // 2


def tap_matrices(shape, filt, strides, padding):
    """Per filter tap, the (P_out, P_in) selection matrix; and the output shape."""
    geo = [_lo(n, k, s, padding) for n, k, s in zip(shape, filt, strides)]
    out_shape = tuple(g[0] for g in geo)
    P_in, P_out = int(np.prod(shape)), int(np.prod(out_shape))
    mats = []
    for d in itertools.product(*[range(k) for k in filt]):
        A = np.zeros((P_out, P_in))
        for o in itertools.product(*[range(m) for m in out_shape]):
            idx = []
            for ax in range(len(shape)):
                i = o[ax] * strides[ax] + d[ax] - geo[ax][1]
                if padding == "CIRCULAR":
                    i %= shape[ax]
                elif not 0 <= i < shape[ax]:
                    idx = None
                    break
                idx.append(i)
            if idx is not None:
                A[np.ravel_multi_index(o, out_shape), np.ravel_multi_index(tuple(idx), shape)] = 1.0
        mats.append(A)
    return mats, out_shape


def pool_matrix(shape, window, strides, padding):
    """(P_out, P_in) average over the window (divided by the window size, padded entries 0)."""
    mats, out_shape = tap_matrices(shape, window, strides, padding)
    return sum(mats) / len(mats), out_shape


def _pair(act, a, b, c):
    """(E[phi(u)phi(v)], E[phi'(u)phi'(v)]) for (u, v) of covariance [[a, c], [c, b]]."""
    if act == "relu":
        s = math.sqrt(a * b)
        if s == 0:
            return 0.0, 0.25
        r = max(-1.0, min(1.0, c / s))
        t = math.acos(r)
        return s * (math.sin(t) + (math.pi - t) * r) / (2 * math.pi), (math.pi - t) / (2 * math.pi)
    if act == "erf":
        d = math.sqrt((1 + 2 * a) * (1 + 2 * b))
        return 2 / math.pi * math.asin(2 * c / d), 4 / math.pi / math.sqrt(d * d - 4 * c * c)
    raise ValueError(act)


def reference(spec, x, act, parameterization="ntk", width=None, tape=None):
    """NNGP and NTK of the chain ``spec`` (a list of tuples, see tests/test_spatial.py) on images ``x``; ``tape`` (a
    list) receives per layer its output covariance ``K`` over all (input, position) units and what the backward pass
    of :func:`reference_backward` needs."""
    N = x.shape[0]
    shape, C = x.shape[1:-1], x.shape[-1]
    F = x.reshape(N, -1, C)
    P = F.shape[1]
    K = np.einsum("npc,mqc->npmq", F, F).reshape(N * P, N * P) / C
    T = np.zeros_like(K)
    fan = float(C)
    spatial = True
    standard = parameterization == "standard"

    def kron(A):
        return np.kron(np.eye(N), A)

    def run(spec, K, T, shape, fan, spatial, tape=None):
        for lay in spec:
            kind = lay[0]
            ent = {"kind": kind, "N": N, "P_in": int(np.prod(shape)) if spatial else 1}
            if kind == "conv":
                _, w, b, filt, strides, padding = lay
                mats, shape = tap_matrices(shape, filt, strides, padding)
                Ks = sum(kron(A) @ K @ kron(A).T for A in mats) / len(mats)
                Ts = sum(kron(A) @ T @ kron(A).T for A in mats) / len(mats)
                Ko = w * Ks + b
                direct = fan * len(mats) * Ks + 1.0 if standard else Ko
                T = w * Ts + direct
                K, fan = Ko, float(width) if width is not None else np.nan
                ent.update(maps=[kron(A) for A in mats], w=w, direct=direct)
            elif kind == "dense":
                _, w, b = lay
                Ko = w * K + b
                direct = fan * K + 1.0 if standard else Ko
                T = w * T + direct
                K, fan = Ko, float(width) if width is not None else np.nan
                ent.update(w=w, direct=direct)
            elif kind == "act":
                d = np.diag(K).copy()
                Ko, Do = np.empty_like(K), np.empty_like(K)
                for i in range(len(K)):
                    for j in range(len(K)):
                        Ko[i, j], Do[i, j] = _pair(act, d[i], d[j], K[i, j])
                K, T = Ko, Do * T
                ent.update(Do=Do)
            elif kind == "pool":
                _, window, strides, padding = lay
                B, shape = pool_matrix(shape, window, strides, padding)
                K, T = kron(B) @ K @ kron(B).T, kron(B) @ T @ kron(B).T
                ent.update(maps=[kron(B)], w=1.0)
            elif kind == "gap":
                g = np.full((1, int(np.prod(shape))), 1.0 / np.prod(shape))
                K, T, spatial, shape = kron(g) @ K @ kron(g).T, kron(g) @ T @ kron(g).T, False, ()
                ent.update(maps=[kron(g)], w=1.0)
            elif kind == "flat":
                Pn = int(np.prod(shape))
                K = np.einsum("apbp->ab", K.reshape(N, Pn, N, Pn)) / Pn
                T = np.einsum("apbp->ab", T.reshape(N, Pn, N, Pn)) / Pn
                spatial, shape, fan = False, (), fan * Pn
                ent.update(Pn=Pn)
            elif kind == "ln":
                Pn = int(np.prod(shape)) if spatial else 1
                v = np.diag(K).reshape(N, Pn)
                if lay[1] == "all":
                    v = np.repeat(v.mean(axis=1, keepdims=True), Pn, axis=1)
                s = 1.0 / np.sqrt(1e-12 + v.reshape(-1))
                K, T = K * np.outer(s, s), T * np.outer(s, s)
                ent.update(scale=np.outer(s, s))
            elif kind == "drop":          # one mask per (input, position, channel): only a unit with itself
                K, T = K + np.diag(np.diag(K)) * (1 / lay[1] - 1), T + np.diag(np.diag(T)) * (1 / lay[1] - 1)
                ent.update(keep=lay[1])
            elif kind == "res":
                sub = [] if tape is not None else None
                Kb, Tb, shb, _, _ = run(lay[2], K, T, shape, fan, spatial, sub)
                assert shb == shape
                K, T = K + lay[1] ** 2 * Kb, T + lay[1] ** 2 * Tb
                ent.update(sub=sub, a2=lay[1] ** 2)
            else:
                raise ValueError(kind)
            ent.update(K=K)
            if tape is not None:
                tape.append(ent)
        return K, T, shape, fan, spatial

    K, T, shape, _, spatial = run(spec, K, T, shape, fan, spatial, tape)
    if spatial:
        Pn = int(np.prod(shape))
        return K.reshape(N, Pn, N, Pn).transpose(0, 2, 1, 3), T.reshape(N, Pn, N, Pn).transpose(0, 2, 1, 3)
    return K, T


def reference_backward(tape):
    """q-tilde over all (input, position) units at each layer's output, back from ``qtilde = 1`` at the (flat, one
    unit) output: each linear layer ``K -> sum_k w B_k K B_k^T`` sends ``R -> sum_k w B_k^T R B_k``, a nonlinearity
    multiplies by ``E[phi'(u) phi'(v)]``, layer norm by ``s s^T``, Flatten spreads ``R / P`` on the same-position
    entries, a residual adds ``alpha^2`` times its block's backward. Returns ``(entries in walk order, the layers'
    NTK terms sum(qtilde_out * direct) per input pair)``: the explicit-matrix transpose of :func:`reference`."""

    def back(tape, R):
        for ent in reversed(tape):
            ent["qt"] = R
            kind = ent["kind"]
            if "direct" in ent:
                N = ent["N"]
                Pn = R.shape[0] // N
                ent["term"] = (R * ent["direct"]).reshape(N, Pn, N, Pn).sum(axis=(1, 3))
            if kind == "conv":
                R = ent["w"] * sum(B.T @ R @ B for B in ent["maps"]) / len(ent["maps"])
            elif kind in ("pool", "gap"):
                R = sum(B.T @ R @ B for B in ent["maps"])
            elif kind == "dense":
                R = ent["w"] * R
            elif kind == "act":
                R = ent["Do"] * R
            elif kind == "ln":
                R = R * ent["scale"]
            elif kind == "flat":
                N, Pn = ent["N"], ent["Pn"]
                R = np.kron(R, np.eye(Pn)) / Pn
            elif kind == "drop":
                R = R + np.diag(np.diag(R)) * (1 / ent["keep"] - 1)
            elif kind == "res":
                R = R + back(ent["sub"], ent["a2"] * R)
        return R

    N = tape[0]["N"]
    back(tape, np.ones((N, N)))
    out = []

    def walk(tape):
        for ent in tape:
            out.append(ent)
            if "sub" in ent:
                walk(ent["sub"])
    walk(tape)
    return out
