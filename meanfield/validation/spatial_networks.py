r"""Finite-width torch twins of convolutional chains (:mod:`meanfield.spatial`), batched over seeds.

A :class:`SpatialEnsemble` holds ``n_seeds`` independent draws of a network built from a chain of Conv, AvgPool,
GlobalAvgPool, Flatten, LayerNorm, Dense, Nonlinearity, Dropout and Residual layers, acting on channels-last inputs
``(N, H, W, C)`` / ``(N, L, C)``; hidden Conv / Dense layers have ``round(width_ratio * width)`` channels, the chain's
last Dense layer ``n_outputs``. Parameters, per layer ``k`` (chain order):

* Conv: raw draws ``w ~ N(0, 1)`` of shape ``(S, C_out, C_in, *filter)``, used as ``sqrt(weight_var / (C_in |F|)) w``
  (NTK parameterization: ``w`` is the parameter; standard: the scaled weight is); ``orthogonal=True`` draws the
  delta-orthogonal kernel of Xiao et al. 2018 instead: only the centre tap is non-zero (and is the only parameter),
  ``sqrt(max(C_in, C_out)) O`` with ``O`` Haar-orthogonal, scaled by ``sqrt(weight_var / C_in)``;
* Dense: as :func:`meanfield.validation.sample_chain` (``orthogonal=True``: ``sqrt(max(fan_in, fan_out)) O``);
* biases ``sqrt(bias_var) beta``, ``beta ~ N(0, 1)`` per output channel;
* Dropout: ``h m / keep`` with ``m ~ Bernoulli(keep)`` per seed, input, position and channel (torch ``nn.Dropout``
  on channels-last tensors), drawn from the generator of :meth:`SpatialEnsemble.apply`.

Padding follows lax/neural-tangents: SAME pads ``total = max((n_out - 1) s + k - n, 0)``, ``floor(total / 2)`` on the
left; CIRCULAR wraps by the same amounts. Draws come from a generator seeded per network, as in
:mod:`meanfield.validation.networks`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as tF

from .._checks import check_int
from .networks import _network_seed, haar_orthogonal, resolve_device, resolve_dtype, torch_activation

__all__ = ["SpatialEnsemble", "sample_spatial_chain"]


def _geometry(n, k, s, padding):
    if padding == "VALID":
        return (n - k) // s + 1, 0, 0
    n_out = -(-n // s)
    total = max((n_out - 1) * s + k - n, 0)
    return n_out, total // 2, total - total // 2


def _pad(h, shape, window, strides, padding):
    """Pad the spatial axes of a channels-first batch ``h`` (B, C, *shape)."""
    if padding == "VALID":
        return h
    pads = []
    for n, k, s in reversed(list(zip(shape, window, strides))):
        _, lo, hi = _geometry(n, k, s, padding)
        pads += [lo, hi]
    if not any(pads):
        return h
    if padding == "CIRCULAR":
        return tF.pad(h, pads, mode="circular")
    return tF.pad(h, pads)


@dataclass(frozen=True, eq=False)
class _Twin:
    layer: object
    index: int          # parameter index (0 = no parameters)
    fan_in: int
    fan_out: int
    shape_in: tuple
    block: tuple = ()
    readout: bool = False


class SpatialEnsemble:
    """``n_seeds`` random finite networks of a convolutional chain (see the module docstring); build it with
    :func:`sample_spatial_chain`."""

    def __init__(self, chain, width, n_outputs, parameterization, twins, raw, dtype, device, input_shape, seed=0):
        self.chain, self.width, self.n_outputs = chain, width, n_outputs
        self.parameterization, self.twins, self.raw = parameterization, twins, raw
        self.dtype, self.device, self.input_shape = dtype, device, input_shape
        self.seed = seed

    @property
    def n_seeds(self) -> int:
        return next(iter(self.raw.values())).shape[0]

    def parameters(self, requires_grad: bool = False) -> dict:
        """Trainable tensors per layer (raw draws in the NTK parameterization, scaled ones in the standard one)."""
        out = {}
        for tw in _walk(self.twins):
            if tw.index == 0:
                continue
            W, b = self.raw[f"W{tw.index}"], self.raw[f"b{tw.index}"]
            if self.parameterization == "standard":
                W, b = _weight_scale(tw) * W, math.sqrt(tw.layer.bias_var) * b
            out[f"W{tw.index}"] = W.detach().clone().requires_grad_(requires_grad)
            out[f"b{tw.index}"] = b.detach().clone().requires_grad_(requires_grad)
        return out

    def apply(self, params, x, record=None, generator=None):
        """Outputs ``(S, N, ...)`` of every network on ``x`` (N, *spatial, C) for the parameters ``params``.

        Dropout layers draw their masks (one per seed, input, position and channel) from ``generator``, by default
        a generator seeded from the ensemble's seed: every call without one sees the same masks."""
        x = torch.as_tensor(np.asarray(x), dtype=self.dtype, device=self.device)
        if tuple(x.shape[1:]) != tuple(self.input_shape):
            raise ValueError(f"x must have shape (N, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(_network_seed(self.seed, 2 ** 40))
        h = x.expand(self.n_seeds, *x.shape)
        return _run(self.twins, h, params, self, record, generator)

    def __call__(self, x):
        return self.apply(self.parameters(), x)

    def order_parameters(self, x) -> dict:
        r"""Per seed: ``nngp`` (S, N, N) the readout-input covariance pushed through the readout,
        ``w_L h.h'/fan_in + b_L`` (an unbiased single-network estimate of the NNGP), ``ntk`` (S, N, N) the
        parameter-gradient Gram matrix ``sum_theta df/dtheta df'/dtheta`` averaged over the outputs (autograd), and
        ``q`` per layer the channel-averaged same-position products ``h(x, p).h(x, p)/C`` (S, N, *spatial)."""
        params = self.parameters()
        f, pullback = torch.func.vjp(lambda p: self.apply(p, x), params)[:2]
        S, N, C = f.shape[0], f.shape[1], f.shape[-1]
        # every row of the Jacobian at once: one vmapped pullback of the N C one-hot cotangents (the networks are
        # independent, so a cotangent that is one-hot in (n, c) for every seed gives each seed's row n, c)
        basis = torch.eye(N * C, dtype=f.dtype, device=f.device).reshape(N * C, 1, N, C).expand(N * C, S, N, C)
        (grads,) = torch.func.vmap(pullback)(basis)
        J = torch.cat([grads[k].reshape(N * C, S, -1) for k in sorted(grads)], dim=2)     # (N C, S, n_params)
        J = J.reshape(N, C, S, -1).permute(2, 1, 0, 3)                                     # (S, C, N, n_params)
        ntk = torch.einsum("scnp,scmp->snm", J, J) / C
        record = []
        with torch.no_grad():
            self.apply(params, x, record)
        last_tw, h_in = record[-1]
        hh = torch.einsum("snc,smc->snm", h_in, h_in).detach() / last_tw.fan_in
        nngp = last_tw.layer.weight_var * hh + last_tw.layer.bias_var
        qs = [(tw, (u * u).mean(dim=-1).detach().cpu().numpy()) for tw, u in record[:-1]]
        return {"nngp": nngp.cpu().numpy(), "ntk": ntk.detach().cpu().numpy(), "q": qs}

    def jacobian_gram(self, x) -> dict:
        r"""Per seed the Gram ``J J^T`` (S, C T, C T) of the Jacobian of all outputs on ``x`` (rows ``(k, t)``, output
        major) with respect to all parameters, the same per Conv / Dense layer (``layers``: a list in chain order),
        and the parameter counts ``n_params`` (total) and ``layer_n_params``. The non-zero eigenvalues of the
        empirical FIM ``J^T J / T`` are those of ``gram / T``."""
        params = self.parameters(requires_grad=True)
        f = self.apply(params, x)
        S, T, C = f.shape
        names = sorted(params, key=lambda k: (int(k[1:]), k[0]))        # W1, b1, W2, b2, ...
        layer_of = [int(n[1:]) for n in names]
        rows = []
        for k in range(C):
            for t in range(T):
                g = torch.autograd.grad(f[:, t, k].sum(), [params[n] for n in names], retain_graph=True)
                rows.append([gi.reshape(S, -1) for gi in g])
        idx = sorted(set(layer_of))
        layers = []
        for li in idx:
            J = torch.stack([torch.cat([r[j] for j, l in enumerate(layer_of) if l == li], dim=1) for r in rows], 1)
            layers.append((J @ J.transpose(1, 2)).detach().cpu().numpy())
        counts = [sum(params[n].numel() // S for n, l in zip(names, layer_of) if l == li) for li in idx]
        return {"gram": sum(layers), "layers": layers, "n_params": int(sum(counts)), "layer_n_params": counts}

    def qtilde(self, x, output: int = 0) -> list:
        r"""Per hidden Conv / Dense layer (chain order, the readout excluded): ``(layer, Q)`` with ``Q`` (S, N, N, P, P)
        (or (S, N, N) after the spatial axes) the measured back-propagated overlap
        ``sum_i delta_i(x, p) delta_i(x', p')``, ``delta = d f_output / d s`` at the layer's output ``s`` (autograd;
        for a residual block's last layer ``s`` is the block output before the scale ``alpha``). The
        infinite-width value is :func:`meanfield.spatial.spatial_trace`'s ``qtilde``."""
        output = check_int("output", output, 0)
        if output >= self.n_outputs:
            raise ValueError(f"output must be in [0, {self.n_outputs - 1}], got {output}")
        params = self.parameters(requires_grad=True)
        record = []
        f = self.apply(params, x, record)
        if not record or not record[-1][0].readout:
            raise ValueError("the chain must end with a Dense readout (q-tilde is measured from its output units)")
        tws = [tw for tw, _ in record[:-1]]
        hs = [h for _, h in record[:-1]]
        N = f.shape[1]
        deltas = [torch.zeros_like(h) for h in hs]
        for n in range(N):
            g = torch.autograd.grad(f[:, n, output].sum(), hs, retain_graph=True)
            for d, gk in zip(deltas, g):
                d[:, n] = gk[:, n]
        out = []
        for tw, d in zip(tws, deltas):
            S, C = d.shape[0], d.shape[-1]
            if d.ndim == 3:
                out.append((tw.layer, torch.einsum("snc,smc->snm", d, d).detach().cpu().numpy()))
            else:
                d = d.reshape(S, N, -1, C)
                out.append((tw.layer, torch.einsum("snpc,smqc->snmpq", d, d).detach().cpu().numpy()))
        return out


def _walk(twins):
    for tw in twins:
        yield tw
        yield from _walk(tw.block)


def _weight_scale(tw) -> float:
    from ..spatial import Conv

    lay = tw.layer
    if isinstance(lay, Conv):
        return math.sqrt(lay.weight_var / (tw.fan_in * (1 if lay.orthogonal else lay.filter_size)))
    return math.sqrt(lay.weight_var / tw.fan_in)


def _run(twins, h, params, ens, record, gen=None):
    from ..layers import Dense, Dropout, Nonlinearity, Residual
    from ..spatial import AvgPool, Conv, Flatten, GlobalAvgPool, LayerNorm

    ntk = ens.parameterization == "ntk"
    for tw in twins:
        lay = tw.layer
        S, N = h.shape[0], h.shape[1]
        if isinstance(lay, (Dense, Conv)):
            W, b = params[f"W{tw.index}"], params[f"b{tw.index}"]
            sw, sb = (_weight_scale(tw), math.sqrt(lay.bias_var)) if ntk else (1.0, 1.0)
            if isinstance(lay, Dense):
                if record is not None and tw.readout:
                    record.append((tw, h))
                u = sw * torch.einsum("sn...i,soi->sn...o", h, W)
            else:
                shape = h.shape[2:-1]
                hc = h.movedim(-1, 2).transpose(0, 1).reshape(N, S * tw.fan_in, *shape)
                fs = lay.filter_shape
                if lay.orthogonal:
                    Wf = torch.zeros((S, tw.fan_out, tw.fan_in) + fs, dtype=W.dtype, device=W.device)
                    Wf[(slice(None),) * 3 + tuple(k // 2 for k in fs)] = W
                    W = Wf
                hp = _pad(hc, shape, fs, lay.strides, lay.padding)
                conv = tF.conv1d if len(fs) == 1 else tF.conv2d
                u = conv(hp, W.reshape(S * tw.fan_out, tw.fan_in, *fs), stride=lay.strides, groups=S)
                u = sw * u.reshape(N, S, tw.fan_out, *u.shape[2:]).transpose(0, 1).movedim(2, -1)
            bshape = (S,) + (1,) * (u.ndim - 2) + (tw.fan_out,)
            h = u + sb * b.reshape(bshape)
            if record is not None and not tw.readout:
                record.append((tw, h))
        elif isinstance(lay, Nonlinearity):
            h = torch_activation(lay.activation).phi(h)
        elif isinstance(lay, AvgPool):
            shape = h.shape[2:-1]
            C = h.shape[-1]
            hc = h.movedim(-1, 2).reshape(S * N, C, *shape)
            hp = _pad(hc, shape, lay.window_shape, lay.strides, lay.padding)
            pool = tF.avg_pool1d if len(shape) == 1 else tF.avg_pool2d
            out = pool(hp, lay.window_shape, lay.strides)
            if lay.normalize_edges and lay.padding == "SAME":
                ones = torch.ones((1, 1) + tuple(shape), dtype=h.dtype, device=h.device)
                cnt = pool(_pad(ones, shape, lay.window_shape, lay.strides, "SAME"), lay.window_shape, lay.strides)
                out = out / cnt
            h = out.reshape(S, N, C, *out.shape[2:]).movedim(2, -1)
        elif isinstance(lay, GlobalAvgPool):
            h = h.mean(dim=tuple(range(2, h.ndim - 1)))
        elif isinstance(lay, Flatten):
            h = h.reshape(S, N, -1)
        elif isinstance(lay, LayerNorm):
            dims = (-1,) if lay.axis == "channel" else tuple(range(2, h.ndim))
            mean = h.mean(dim=dims, keepdim=True)
            var = ((h - mean) ** 2).mean(dim=dims, keepdim=True)
            h = (h - mean) / torch.sqrt(var + lay.eps)
        elif isinstance(lay, Dropout):
            if lay.keep < 1.0:
                m = torch.rand(h.shape, generator=gen, dtype=h.dtype, device=h.device) < lay.keep
                h = h * m.to(h.dtype) / lay.keep
        elif isinstance(lay, Residual):
            g = _run(tw.block, h, params, ens, record, gen)
            h = h + lay.alpha * g
        else:
            raise TypeError(f"no torch twin for layer {type(lay).__name__}")
    return h


def _twins(layers, width, fan_in, shape, counter, last_readout, n_outputs):
    from ..layers import Dense, Dropout, Nonlinearity, Residual
    from ..spatial import AvgPool, Conv, Flatten, GlobalAvgPool, LayerNorm

    out = []
    for k, lay in enumerate(layers):
        if isinstance(lay, (Dense, Conv)):
            counter[0] += 1
            readout = last_readout and k == len(layers) - 1 and isinstance(lay, Dense)
            fan_out = n_outputs if readout else max(1, int(round(lay.width_ratio * width)))
            out.append(_Twin(lay, counter[0], fan_in, fan_out, shape, readout=readout))
            if isinstance(lay, Conv):
                shape = tuple(_geometry(n, kk, s, lay.padding)[0]
                              for n, kk, s in zip(shape, lay.filter_shape, lay.strides))
            fan_in = fan_out
        elif isinstance(lay, AvgPool):
            out.append(_Twin(lay, 0, fan_in, fan_in, shape))
            shape = tuple(_geometry(n, kk, s, lay.padding)[0]
                          for n, kk, s in zip(shape, lay.window_shape, lay.strides))
        elif isinstance(lay, GlobalAvgPool):
            out.append(_Twin(lay, 0, fan_in, fan_in, shape))
            shape = ()
        elif isinstance(lay, Flatten):
            out.append(_Twin(lay, 0, fan_in, fan_in * int(np.prod(shape)), shape))
            fan_in, shape = fan_in * int(np.prod(shape)), ()
        elif isinstance(lay, (Nonlinearity, LayerNorm, Dropout)):
            out.append(_Twin(lay, 0, fan_in, fan_in, shape))
        elif isinstance(lay, Residual):
            block, f2, s2 = _twins(lay.block.layers, width, fan_in, shape, counter, False, n_outputs)
            if f2 != fan_in or s2 != shape:
                raise ValueError("a Residual block must keep the channels and the spatial shape")
            out.append(_Twin(lay, 0, fan_in, fan_in, shape, tuple(block)))
        else:
            raise TypeError(f"no torch twin for layer {type(lay).__name__}")
    return out, fan_in, shape


def sample_spatial_chain(chain, input_shape, width: int, n_seeds: int, *, n_outputs: int = 1,
                         parameterization: str = "ntk", seed: int = 0, first_index: int = 0, device=None,
                         dtype="float64") -> SpatialEnsemble:
    r"""Draw ``n_seeds`` finite networks of a convolutional chain for inputs of shape ``input_shape`` = (*spatial, C).

    Examples
    --------
    >>> from meanfield.layers import Dense, Nonlinearity, serial
    >>> from meanfield.spatial import Conv, GlobalAvgPool
    >>> net = serial(Conv(2.0, 0.0, (3, 3)), Nonlinearity("relu"), GlobalAvgPool(), Dense(1.0))
    >>> ens = sample_spatial_chain(net, (5, 5, 3), width=8, n_seeds=2, n_outputs=4, device="cpu")
    >>> tuple(ens(np.ones((6, 5, 5, 3))).shape)
    (2, 6, 4)
    """
    from ..trace import as_chain

    ch = as_chain(chain)
    width = check_int("width", width, 1)
    n_seeds = check_int("n_seeds", n_seeds, 1)
    n_outputs = check_int("n_outputs", n_outputs, 1)
    seed = check_int("seed", seed, 0)
    first_index = check_int("first_index", first_index, 0)
    if parameterization not in ("ntk", "standard"):
        raise ValueError(f"parameterization must be 'ntk' or 'standard', got {parameterization!r}")
    input_shape = tuple(int(v) for v in input_shape)
    if len(input_shape) not in (2, 3):
        raise ValueError(f"input_shape must be (L, C) or (H, W, C), got {input_shape}")
    twins, _, _ = _twins(ch.layers, width, input_shape[-1], input_shape[:-1], [0], True, n_outputs)
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    params = [tw for tw in _walk(twins) if tw.index]
    raw = {}
    for tw in params:
        lay = tw.layer
        shp = (tw.fan_out, tw.fan_in) + (lay.filter_shape if hasattr(lay, "filter_shape") and not lay.orthogonal
                                         else ())
        raw[f"W{tw.index}"] = torch.empty((n_seeds,) + shp, dtype=dt, device=dev)
        raw[f"b{tw.index}"] = torch.empty((n_seeds, tw.fan_out), dtype=dt, device=dev)
    gen = torch.Generator(device=dev)
    for i in range(n_seeds):
        gen.manual_seed(_network_seed(seed, first_index + i))
        for tw in params:
            W = raw[f"W{tw.index}"]
            if getattr(tw.layer, "orthogonal", False):
                W[i] = math.sqrt(max(tw.fan_in, tw.fan_out)) * haar_orthogonal(tw.fan_out, tw.fan_in, gen, dt, dev)
            else:
                W[i].normal_(generator=gen)
            raw[f"b{tw.index}"][i].normal_(generator=gen)
    return SpatialEnsemble(ch, width, n_outputs, parameterization, tuple(twins), raw, dt, dev, input_shape, seed)
