"""Matplotlib figures for phase diagrams, critical lines, depth scales and map dynamics.

All functions draw on a given ``ax``/``fig`` (or make one) and return it; nothing is shown or saved unless asked
(:func:`save_figure`). Axes use the papers' symbols: ``sigma_w^2`` (weight variance), ``sigma_b^2`` (bias variance),
``chi_1``, ``xi_c`` (Poole et al. 2016; Schoenholz et al. 2017).

This module computes no physics and does not import :mod:`meanfield.phase`: it draws the arrays of that module's
result objects (or of any object with the same attributes). What a figure needs beyond them is computed by the result
and passed in, e.g. the critical line refined near ``sigma_b^2 = 0``
(:meth:`~meanfield.phase.PhaseDiagram.critical_line_points`, which ``PhaseDiagram.plot`` passes as ``critical``).

Examples
--------
>>> import numpy as np
>>> from meanfield.phase import phase_diagram
>>> from meanfield.plotting import plot_phase_diagram, save_figure
>>> pd = phase_diagram("tanh", np.linspace(0.5, 4, 60), np.linspace(0, 0.5, 40))
>>> ax = plot_phase_diagram(pd, "xi_c", critical=pd.critical_line_points())   # = pd.plot("xi_c")
>>> save_figure(ax.figure, "tanh_xi_c")     # doctest: +SKIP
['tanh_xi_c.png', 'tanh_xi_c.svg']
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from typing import Any, List, Optional, Sequence, Union

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

import os

import numpy as np

__all__ = [
    "plot_phase_diagram",
    "plot_critical_line",
    "plot_depth_scales",
    "plot_map_dynamics",
    "save_figure",
    "SYMBOLS",
]

#: LaTeX labels of the quantities
SYMBOLS = {
    "weight_var": r"$\sigma_w^2$",
    "bias_var": r"$\sigma_b^2$",
    "qstar": r"$q^*$",
    "chi1": r"$\chi_1$",
    "cstar": r"$c^*$",
    "chi_c": r"$\chi_c$",
    "xi_q": r"$\xi_q$",
    "xi_c": r"$\xi_c$",
    "xi_grad": r"$\xi_\nabla$",
}

_XI_CAP = 200.0  # colour-scale cap for diverging depth scales (xi_c is infinite on the critical line)


def _pyplot():
    import matplotlib.pyplot as plt

    return plt


def _new_ax(ax, figsize=(6.4, 4.8)):
    if ax is not None:
        return ax
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _region_label_position(mask, weight_vars, bias_vars):
    """Centroid (in data coordinates) of the grid points in ``mask``; None if empty."""
    if not mask.any():
        return None
    W, B = np.meshgrid(weight_vars, bias_vars)
    return float(W[mask].mean()), float(B[mask].mean())


def plot_phase_diagram(pd: Any, quantity: str = "chi1", ax: Optional[Axes] = None, *, critical: Any = True,
                       label_phases: bool = True, ridge: Optional[bool] = None, cmap: Any = None,
                       vmin: Optional[float] = None, vmax: Optional[float] = None, colorbar: bool = True,
                       title: Optional[str] = None) -> Axes:
    r"""Heat map of a :class:`~meanfield.phase.PhaseDiagram` quantity over (sigma_w^2, sigma_b^2).

    ``chi1`` uses a diverging colour map on a logarithmic scale symmetric about the transition ``chi_1 = 1``
    (``chi_1`` and ``1/chi_1`` equally far from it: ``log chi_1 = -1/xi_grad`` is the per-layer growth rate, so neither
    phase is stretched or squeezed); the depth scales ``xi_q``, ``xi_c``, ``xi_grad`` use a logarithmic scale capped at
    200 (``xi_c`` diverges on the critical line; the colour bar's arrow marks the cap). Where ``q*`` is infinite (the
    length map diverges: relu-like activations in the chaotic phase) the depth scales and ``qstar`` are not coloured
    but drawn grey and hatched, with a legend entry; other NaN entries are grey too.

    Parameters
    ----------
    pd : PhaseDiagram
    quantity : {"chi1", "xi_c", "xi_q", "xi_grad", "qstar", "cstar", "chi_c"}
    ax : matplotlib Axes, optional
    critical : bool or (weight_vars, bias_vars)
        Overlay the critical line ``chi_1 = 1``: True draws the stored line ``(pd.critical_weight_vars,
        pd.bias_vars)``, a pair of arrays draws that line (:meth:`PhaseDiagram.plot
        <meanfield.phase.PhaseDiagram.plot>` passes :meth:`~meanfield.phase.PhaseDiagram.critical_line_points`,
        refined near ``sigma_b^2 = 0``), False draws none.
    label_phases : bool
        Write "ordered" / "chaotic" in the two regions.
    ridge : bool, optional
        Mark the grid maximum of ``xi_c`` in each row (default: True for ``quantity="xi_c"``).
    cmap, vmin, vmax : optional
        Colour map and limits.
    colorbar : bool
    title : str, optional

    Returns
    -------
    matplotlib Axes
    """
    import matplotlib.colors as mcolors

    try:
        data = np.array(pd[quantity], dtype=np.float64)
    except KeyError as exc:
        raise ValueError(str(exc.args[0])) from None
    ax = _new_ax(ax)
    if quantity == "xi_grad":
        data = np.abs(data)  # negative in the chaotic phase (gradients grow): plot the scale |xi_grad|
    w, b = pd.weight_vars, pd.bias_vars
    finite = data[np.isfinite(data)]
    norm = None
    diverged = np.isinf(np.asarray(pd.qstar))
    extend = "neither"
    if quantity == "chi1":
        pos = finite[finite > 0]
        lo = vmin if vmin is not None else (float(pos.min()) if pos.size else 0.5)
        hi = vmax if vmax is not None else (float(pos.max()) if pos.size else 2.0)
        # log scale symmetric about 1 (the transition): chi_1 and 1/chi_1 get the same colour distance from white
        r = min(max(hi, 1.0 / max(lo, 1e-300), 1.001), 1e3)
        norm = mcolors.LogNorm(vmin=1.0 / r, vmax=r)
        data = np.clip(data, 1.0 / r, r)
        cmap = cmap or "RdBu_r"
    elif quantity.startswith("xi_"):
        pos = finite[finite > 0]
        lo = vmin if vmin is not None else (max(float(pos.min()), 1e-2) if pos.size else 1e-2)
        hi = vmax if vmax is not None else min(max(float(pos.max()) if pos.size else 10.0, lo * 10), _XI_CAP)
        data = np.where(np.isposinf(data), hi, np.clip(data, lo, hi))
        data[diverged] = np.nan  # q* = inf: no depth scale of a fixed point to show (hatched below)
        norm = mcolors.LogNorm(vmin=lo, vmax=hi)
        extend = "max"
        cmap = cmap or "magma"
    else:
        if quantity == "qstar":
            data[diverged] = np.nan
        cmap = cmap or "viridis"
    masked = np.ma.masked_invalid(data)
    cm = _pyplot().get_cmap(cmap).with_extremes(bad="0.75")
    mesh = ax.pcolormesh(w, b, masked, shading="nearest", cmap=cm, norm=norm,
                         vmin=None if norm is not None else vmin, vmax=None if norm is not None else vmax,
                         rasterized=True)
    if colorbar:
        cb = ax.figure.colorbar(mesh, ax=ax, extend=extend)
        label = SYMBOLS[quantity] if quantity != "xi_grad" else r"$|\xi_\nabla|$"
        if quantity.startswith("xi_"):
            label += f"  (capped at {norm.vmax:.3g})"
        elif quantity == "chi1":
            label += "  (log scale, 1 = critical)"
            from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullLocator

            steps = np.array([1.0, 1.5, 2.0, 3.0, 5.0, 7.0])
            ticks = np.concatenate([1.0 / steps[:0:-1], steps]) if r < 8 else 10.0 ** np.arange(-3, 4)
            ticks = np.unique(np.concatenate([ticks, 1.0 / ticks]))
            ticks = ticks[(ticks >= (1 - 1e-9) / r) & (ticks <= r * (1 + 1e-9))]   # the norm is [1/r, r]
            cb.ax.yaxis.set_major_locator(FixedLocator(ticks))
            cb.ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
            cb.ax.yaxis.set_minor_locator(NullLocator())
        cb.set_label(label)
    if diverged.any() and w.size > 1 and b.size > 1:
        import matplotlib.patches as mpatches

        ax.contourf(w, b, diverged.astype(float), levels=[0.5, 1.5], colors="none", hatches=["///"])
        ax.add_patch(mpatches.Rectangle((np.nan, np.nan), 0, 0, fc="0.75", hatch="///", ec="0.3",
                                        label=r"$q^*=\infty$ (length map diverges)"))
    draw_critical = critical is not False and critical is not None
    if draw_critical:
        wc, bc = ((np.asarray(pd.critical_weight_vars, dtype=float), b) if critical is True
                  else (np.asarray(critical[0], dtype=float), np.asarray(critical[1], dtype=float)))
        sel = np.isfinite(wc) & (wc >= w[0]) & (wc <= w[-1])
        if sel.any():
            ax.plot(wc[sel], bc[sel], color="k" if quantity == "chi1" else "c", lw=2.0, ls="--",
                    label=r"critical line $\chi_1=1$")
    if ridge is None:
        ridge = quantity == "xi_c"
    if ridge:
        r = pd.xi_c_ridge
        sel = np.isfinite(r)
        if diverged.any():  # a grid maximum inside the q* = inf region is no ridge of a fixed point's xi_c
            col = np.searchsorted(w, np.where(sel, r, w[0]))
            sel &= ~diverged[np.arange(b.size), np.clip(col, 0, w.size - 1)]
        step = max(1, int(sel.sum() // 25))
        idx = np.flatnonzero(sel)[::step]
        if idx.size:
            ax.plot(r[idx], b[idx], ls="none", marker="o", ms=3.5, mfc="w", mec="k", mew=0.6,
                    label=r"ridge of $\xi_c$ (grid maximum)")
    if label_phases and b.size > 1 and w.size > 1:
        box = dict(boxstyle="round", fc="w", ec="none", alpha=0.75)
        chi1 = np.asarray(pd.chi1)
        chaotic_text = "chaotic\n" + r"$\chi_1>1$"
        if (chi1 > 1.0).any() and diverged[chi1 > 1.0].mean() > 0.5:
            chaotic_text = r"$q^l\to\infty$" + "\n" + r"$\chi_1>1$"
        for mask, text in ((chi1 < 1.0, "ordered\n" + r"$\chi_1<1$"), (chi1 > 1.0, chaotic_text)):
            if mask.mean() < 0.04:
                continue
            pos = _region_label_position(mask, w, b)
            if pos is not None:
                ax.text(*pos, text, ha="center", va="center", fontsize=11, bbox=box)
    if draw_critical or ridge:
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(loc="upper left", fontsize=8, framealpha=0.8)
    ax.set_xlabel(SYMBOLS["weight_var"] + "  (weight variance)")
    ax.set_ylabel(SYMBOLS["bias_var"] + "  (bias variance)")
    ax.set_xlim(w[0], w[-1]) if w.size > 1 else None
    ax.set_ylim(b[0], b[-1]) if b.size > 1 else None
    title = title if title is not None else f"{pd.activation}: {SYMBOLS[quantity]}"
    if not getattr(pd, "complete", True):  # interrupted computation: unfinished points are blank
        title += f" (partial: {int(np.sum(pd.finished))} of {pd.finished.size} points)"
    ax.set_title(title)
    return ax



def plot_critical_line(line: Any, ax: Optional[Axes] = None, **kwargs: Any) -> Axes:
    """The critical line ``w_c(sigma_b^2)`` of a :class:`~meanfield.phase.CriticalLine` in the (sigma_w^2, sigma_b^2)
    plane, with the ordered side (left) and chaotic side (right) labelled."""
    ax = _new_ax(ax)
    order = np.argsort(line.bias_vars)
    kw = dict(color="k", lw=2, label=rf"{line.activation}: $\chi_1=1$")
    kw.update(kwargs)
    ax.plot(np.asarray(line.weight_vars)[order], np.asarray(line.bias_vars)[order], **kw)
    ax.set_xlabel(SYMBOLS["weight_var"])
    ax.set_ylabel(SYMBOLS["bias_var"])
    ax.legend(loc="best", fontsize=9)
    return ax


def plot_depth_scales(curve: Any, ax: Optional[Axes] = None, *, show_grad: bool = True, ymax: Optional[float] = None,
                      log: bool = True, title: Optional[str] = None) -> Axes:
    r"""xi_q and xi_c (and xi_grad) against sigma_w^2 at fixed sigma_b^2 (Schoenholz et al. 2017, Fig. 1), with the
    critical point ``w_c`` (where ``chi_1 = 1`` and ``xi_c`` diverges) marked by a vertical line."""
    ax = _new_ax(ax, figsize=(6.4, 4.4))
    w = np.asarray(curve.weight_vars)
    series = [("xi_q", "C0", "-"), ("xi_c", "C3", "-")]
    if show_grad:
        series.append(("xi_grad", "0.4", ":"))
    finite_all = []
    for name, color, ls in series:
        y = np.array(getattr(curve, name), dtype=np.float64)
        label = SYMBOLS[name]
        if name == "xi_grad":
            y = np.abs(y)  # xi_grad < 0 where chi_1 > 1 (gradients grow as chi_1^l)
            label = r"$|\xi_\nabla| = 1/|\log\chi_1|$"
        y[~np.isfinite(y) | (y <= 0)] = np.nan
        if name != "xi_grad":
            finite_all.append(y[np.isfinite(y)])
        style = {"xi_q": dict(lw=3.5, alpha=0.7, zorder=2), "xi_c": dict(lw=1.8, zorder=3),
                 "xi_grad": dict(lw=1.5, zorder=4)}[name]
        ax.plot(w, y, color=color, ls=ls, label=label, **style)
    allv = np.concatenate(finite_all) if finite_all else np.array([1.0])
    top = ymax if ymax is not None else min(float(np.nanmax(allv)) * 1.5 if allv.size else 10.0, 300.0)
    bottom = max(float(np.nanmin(allv)) / 1.5, 1e-2) if allv.size else 1e-1
    div = np.isinf(np.asarray(curve.qstar))
    if div.any():
        ax.fill_between(w, 0, 1, where=div, transform=ax.get_xaxis_transform(), facecolor="none", hatch="///",
                        edgecolor="0.6", lw=0, label=r"$q^*=\infty$: $\xi_c=\infty$, $\xi_q$ undefined")
    wc = curve.critical_weight_var
    if np.isfinite(wc) and w[0] <= wc <= w[-1]:
        ax.axvline(wc, color="k", ls="--", lw=1.2, label=rf"critical $\sigma_w^2={wc:.4g}$ ($\chi_1=1$)")
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom, top)
    else:
        ax.set_ylim(0, top)
    ax.set_xlim(w[0], w[-1])
    ax.set_xlabel(SYMBOLS["weight_var"])
    ax.set_ylabel("depth scale (layers)")
    ax.legend(loc="upper right", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.set_title(title if title is not None else rf"{curve.activation}: depth scales at $\sigma_b^2={curve.bias_var:g}$")
    return ax


def _phase_label(w, chi1) -> str:
    """Legend entry of one weight variance: its value and phase (``chi_1`` beside it when known)."""
    if chi1 is None or not np.isfinite(chi1):
        return rf"$\sigma_w^2={w:g}$"
    phase = "critical" if abs(chi1 - 1.0) < 5e-3 else ("ordered" if chi1 < 1.0 else "chaotic")
    return rf"$\sigma_w^2={w:g}$: {phase}, $\chi_1={chi1:.3g}$"


def _integer_ticks(ax) -> None:
    """Integer ticks on the x axis (layer indices)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _map_panel(ax, grid, maps, fixed_points, weight_vars, colors, chi1=None):
    """One map per weight variance against the identity, its fixed point marked (NaN: not marked)."""
    ax.plot(grid, grid, color="k", ls="--", lw=1, label="identity")
    for i, w in enumerate(weight_vars):
        ax.plot(grid, maps[i], color=colors[i], lw=2, label=_phase_label(w, None if chi1 is None else chi1[i]))
        if np.isfinite(fixed_points[i]):
            ax.plot([fixed_points[i]], [fixed_points[i]], "o", color=colors[i], ms=6)
    ax.legend(fontsize=8)
    return ax


def _iterates_panel(ax, layers, iterates, colors, ylabel, title):
    """Iterates ``iterates[i, j, l]`` against the layer, one colour per weight variance ``i``."""
    for i in range(iterates.shape[0]):
        for j in range(iterates.shape[1]):
            ax.plot(layers, iterates[i, j], color=colors[i], lw=1.5, marker=".", ms=4)
    ax.set_xlabel("layer $l$")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _integer_ticks(ax)
    return ax


def plot_map_dynamics(md: Any, ax: Any = None, *, fig: Optional[Figure] = None, axes: Any = None,
                      title: Optional[str] = None) -> np.ndarray:
    r"""Poole-style four-panel figure of a :class:`~meanfield.phase.MapDynamics`: (a) the length map ``V(q)`` against
    the identity, (b) ``q^l`` against layer ``l``, (c) the correlation map ``C(c)`` against the identity, (d) ``c^l``
    against ``l``. One colour per ``sigma_w^2``, its phase (ordered, critical, chaotic, with ``chi_1``) in the legend;
    fixed points ``q*`` and ``c*`` are marked.

    Parameters
    ----------
    md : MapDynamics
    ax : 2 x 2 array of matplotlib Axes, optional
        The four panels to draw on (e.g. ``plt.subplots(2, 2)[1]``); new ones in a new figure if None. ``axes=`` is
        the same argument under its former name.
    fig : matplotlib Figure, optional
        Deprecated (use ``ax=``): draw four new panels on this figure.
    title : str, optional

    Returns
    -------
    ndarray of matplotlib Axes, shape (2, 2)
        ``axs[0, 0].figure`` is the figure.
    """
    import warnings

    plt = _pyplot()
    from matplotlib.figure import Figure

    if isinstance(ax, Figure):   # the former positional ``fig`` argument
        ax, fig = None, ax
    if fig is not None:
        warnings.warn("plot_map_dynamics(fig=...) is deprecated: pass ax= (a 2 x 2 array of Axes, e.g. "
                      "fig.subplots(2, 2)) instead", DeprecationWarning, stacklevel=3)
    ax = ax if ax is not None else axes
    if ax is not None:
        axs = np.asarray(ax, dtype=object).reshape(2, 2)
        fig = axs[0, 0].figure
    else:
        if fig is None:
            fig = plt.figure(figsize=(10, 7.6), layout="constrained")
        axs = fig.subplots(2, 2)
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(md.weight_vars.size, 2)))
    layers = np.arange(1, md.q_layers.shape[-1] + 1)
    qs = np.where(md.qstar <= md.q_grid[-1], md.qstar, np.nan)  # fixed points beyond the grid are not marked
    chi1 = getattr(md, "chi1", None)
    ax = _map_panel(axs[0, 0], md.q_grid, md.length_map, qs, md.weight_vars, colors, chi1)
    ax.set_xlim(md.q_grid[0], md.q_grid[-1])
    ax.set_ylim(0, max(md.q_grid[-1], 1e-12))
    ax.set_xlabel(r"$q^{l}$")
    ax.set_ylabel(r"$q^{l+1} = \mathcal{V}(q^l)$")
    ax.set_title("(a) length map (dots: $q^*$)")
    ax = _iterates_panel(axs[0, 1], layers, md.q_layers, colors, r"$q^l$", "(b) length iterates")
    qmax = np.nanmax(np.where(np.isfinite(md.q_layers), md.q_layers, np.nan))
    if np.isfinite(qmax) and qmax > 50 * max(np.nanmax(md.q0), 1e-12):
        ax.set_yscale("log")
    ax = _map_panel(axs[1, 0], md.c_grid, md.correlation_map, md.cstar, md.weight_vars, colors, chi1)
    ax.set_xlim(-1, 1)
    ax.set_ylim(-1, 1.02)
    ax.set_xlabel(r"$c^{l}$")
    ax.set_ylabel(r"$c^{l+1} = \mathcal{C}(c^l; q^*)$")
    ax.set_title("(c) correlation map (dots: $c^*$)")
    ax = _iterates_panel(axs[1, 1], layers, md.c_layers, colors, r"$c^l$", "(d) correlation iterates")
    ax.set_ylim(min(-0.05, float(np.nanmin(md.c_layers)) - 0.05), 1.05)
    for a in axs.ravel():
        a.grid(alpha=0.3)
    fig.suptitle(title if title is not None else rf"{md.activation}: length and correlation maps, $\sigma_b^2={md.bias_var:g}$")
    return axs


def save_figure(fig: Figure, stem: Union[str, os.PathLike], formats: Sequence[str] = ("png", "svg"),
                dpi: int = 130) -> List[str]:
    """Save ``fig`` as ``stem.png`` and ``stem.svg`` (or the given formats), each written atomically (temporary file
    in the same folder, then :func:`os.replace`); returns the paths written."""
    from ._io import atomic_open

    stem = os.fspath(stem)
    paths = []
    for fmt in formats:
        path = f"{stem}.{fmt}"
        with atomic_open(path) as fh:  # never a truncated figure under the real name
            fig.savefig(fh, dpi=dpi, format=fmt)
        paths.append(path)
    return paths
