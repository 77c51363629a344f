"""The plots of `diagnose embeddings`: similarity histograms, and 2-D PCA and t-SNE maps coloured by speaker.

Real items are drawn as dots and the vocoder's resynthesis as crosses, on shared axes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unitvox.diagnostics.embeddings.speaker_separation import EmbeddedSet, Separation, combined
from unitvox.report import grid, new_figure, png_bytes

SIMILARITY_PNG, PCA_PNG, TSNE_PNG = "similarity.png", "pca.png", "tsne.png"
CAPTIONS = {SIMILARITY_PNG: "same- and different-speaker similarity", PCA_PNG: "PCA of the embeddings by speaker",
            TSNE_PNG: "t-SNE of the embeddings by speaker"}
MIN_TSNE_POINTS = 5  # fewer points leave t-SNE no neighbourhood to preserve
LEGEND_SPEAKERS = 20  # more speakers than this get no legend (it would hide the map)


def similarity_png(panels: dict[str, Separation], own_item: list[float] | None = None) -> bytes | None:
    """Same- versus different-speaker similarity histograms, a panel per set (`real`, `generated`).

    With `own_item`, a last panel adds each generated item's similarity to its own real item.
    None when no set has a pair to show.
    """
    shown = {name: found for name, found in panels.items() if found.same.size or found.different.size}
    if not shown:
        return None
    count = len(shown) + bool(own_item)
    figure = new_figure(count)
    rows, columns = grid(count)
    bins = _bins([*(found.same for found in shown.values()), *(found.different for found in shown.values()),
                  np.asarray(own_item or [])])
    for index, (name, found) in enumerate(shown.items()):
        axes = figure.add_subplot(rows, columns, index + 1)
        for values, label, colour in ((found.same, "same speaker", "tab:blue"),
                                      (found.different, "different speakers", "tab:orange")):
            if values.size:
                axes.hist(values, bins=bins, density=True, alpha=0.55, color=colour,
                          label=f"{label} (mean {values.mean():.2f}, n={values.size})")
        axes.set_title(f"{name}: cosine similarity of pairs")
        _finish(axes, "cosine similarity", "density")
    if own_item:
        axes = figure.add_subplot(rows, columns, count)
        axes.hist(own_item, bins=bins, color="tab:green", alpha=0.7,
                  label=f"generated vs its own real item (mean {np.mean(own_item):.2f})")
        if "real" in shown and shown["real"].different.size:
            axes.axvline(float(shown["real"].different.mean()), color="tab:orange", linestyle="--",
                         label="mean real different-speaker similarity")
        axes.set_title("does the vocoder keep the voice?")
        _finish(axes, "cosine similarity", "items")
    return png_bytes(figure)


def projection_pngs(real: EmbeddedSet, generated: EmbeddedSet | None, perplexity: float,
                    seed: int) -> tuple[dict[str, bytes], list[str], dict[str, Any]]:
    """2-D PCA and t-SNE maps of real (and generated) embeddings together.

    Returns:
        (figures by file name, notes for the report, details for the JSON: explained variance and
        the perplexity used). A map that cannot be drawn is left out and a note says why.
    """
    points = combined(real, generated) if generated is not None and len(generated) else real
    is_generated = np.arange(len(points)) >= len(real)
    figures, notes, details = {}, [], {}
    if len(points) < 3 or points.embeddings.shape[1] < 2:
        return figures, [f"only {len(points)} embedded items: no PCA or t-SNE map drawn"], details
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=seed)
    mapped = pca.fit_transform(points.embeddings)
    explained = [float(value) for value in pca.explained_variance_ratio_]
    details["pca_explained_variance"] = explained
    figures[PCA_PNG] = _map_png(mapped, points.speakers, is_generated,
                                f"PCA ({explained[0]:.0%} + {explained[1]:.0%} of the variance)")
    if len(points) < MIN_TSNE_POINTS:
        notes.append(f"only {len(points)} embedded items: t-SNE needs {MIN_TSNE_POINTS}, no t-SNE map drawn")
        return figures, notes, details
    used = min(perplexity, (len(points) - 1) / 3)
    if used < perplexity:
        notes.append(f"t-SNE perplexity lowered from {perplexity:g} to {used:.2f} for {len(points)} points")
    from sklearn.manifold import TSNE

    mapped = TSNE(n_components=2, perplexity=used, metric="cosine", init="pca",
                  random_state=seed).fit_transform(points.embeddings)
    details["tsne_perplexity"] = used
    figures[TSNE_PNG] = _map_png(mapped, points.speakers, is_generated, f"t-SNE (perplexity {used:.1f}, cosine)")
    return figures, notes, details


def _map_png(mapped: np.ndarray, speakers: list[str], is_generated: np.ndarray, title: str) -> bytes:
    figure = new_figure(1)
    axes = figure.add_subplot(1, 1, 1)
    labels = np.asarray(speakers)
    colours = speaker_colours(sorted(set(speakers)))
    for speaker, colour in colours.items():
        for generated, marker in ((False, "o"), (True, "x")):
            chosen = (labels == speaker) & (is_generated == generated)
            if chosen.any():
                axes.scatter(mapped[chosen, 0], mapped[chosen, 1], color=colour, marker=marker, s=28,
                             label=speaker if not generated else None)
    markers = "dots: real" + (", crosses: generated" if is_generated.any() else "")
    axes.set_title(f"{title}; {markers}", fontsize="medium")
    axes.grid(alpha=0.3)
    if len(colours) <= LEGEND_SPEAKERS:
        axes.legend(title="speaker", fontsize="x-small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    return png_bytes(figure)


def speaker_colours(names: list[str]) -> dict[str, tuple]:
    """One colour per speaker, the same in every map: tab10 for up to ten speakers, else tab20."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: palette(index % palette.N) for index, name in enumerate(names)}


def _bins(groups: list[np.ndarray], count: int = 40) -> np.ndarray:
    """Shared bin edges over the range the similarities span (an embedder may use only a sliver of [-1, 1])."""
    values = np.concatenate([np.asarray(group, dtype=np.float64).ravel() for group in groups])
    low, high = float(values.min()), float(values.max())
    margin = max(0.02 * (high - low), 1e-3)
    return np.linspace(low - margin, high + margin, count + 1)


def _finish(axes, xlabel: str, ylabel: str) -> None:
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
