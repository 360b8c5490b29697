"""Paper-grade figures: what the numbers in a figure mean matches its colour scale and
the table, and every figure is saved at print resolution, with a PDF twin."""
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import reprozoo.report.figures as report
from reprozoo.io import save_figure
from conftest import ROOT, tiny_model_cfg


@pytest.fixture
def captured(monkeypatch):
    """The figures the plotting functions build, kept open instead of saved (reprozoo/report/figures.py's
    name for `reprozoo.io.save_figure` is the one its plotting functions look up)."""
    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.append(fig))
    return figures


def test_confusion_cells_show_the_row_percent_the_colour_means(captured, tmp_path):
    confusion = pd.DataFrame([[8, 2], [1, 3]], index=["cat", "dog"], columns=["cat", "dog"])
    report.plot_confusion("m", confusion, tmp_path / "c.png")
    texts = [t.get_text() for t in captured[0].axes[0].texts]
    assert texts == ["80", "20", "25", "75"]
    assert "% of each true class" in captured[0].axes[0].get_title()
    assert [t.get_text() for t in captured[0].axes[0].get_yticklabels()] == ["cat (n=10)", "dog (n=4)"]


def _legend(fig) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts()]


def test_accuracy_chart_marks_the_tables_not_comparable_rows(captured, tmp_path):
    table = pd.DataFrame({"model": ["mlp", "probe"], "paper_accuracy": [54.44, 95.42], "accuracy": [55.1, 42.4],
                          "flag": ["ok", "not comparable (setting)"]})
    report.plot_accuracy(table, "cifar10_jpeg", tmp_path / "a.png")
    fig = captured[0]
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["mlp", "probe *"]
    assert any(t.get_text().startswith("* not comparable") for t in fig.texts)
    assert _legend(fig) == ["paper (CIFAR-10, P100)", "reproduced (cifar10_jpeg)"]


def test_no_bars_of_two_datasets_on_one_axis(captured, tmp_path):
    """On digits, the study's CIFAR-10 numbers stay in the table: the chart draws digits' bars alone,
    each centred on its tick, and says why the paper's are missing."""
    table = pd.DataFrame({"model": ["mlp", "vae"], "paper_accuracy": [54.44, None], "accuracy": [95.1, 90.2],
                          "accuracy_low": [93.0, 87.0], "accuracy_high": [97.0, 93.0],
                          "flag": ["not comparable (digits)", "ok"]})
    report.plot_accuracy(table, "digits", tmp_path / "a.png", paper_dataset=False)
    fig, ax = captured[0], captured[0].axes[0]
    assert sorted(round(p.get_width(), 2) for p in ax.patches) == [90.2, 95.1]  # no 54.44 bar
    centres = sorted(p.get_y() + p.get_height() / 2 for p in ax.patches)
    assert np.allclose(centres, sorted(ax.get_yticks()))  # each bar on its tick
    assert _legend(fig) == ["reproduced (digits)", "95% interval"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["mlp", "vae"]  # no star: nothing is set beside it
    assert any("CIFAR-10 accuracies are not drawn" in t.get_text() for t in fig.texts)


def test_accuracy_chart_pairs_sit_on_their_ticks_and_show_the_interval(captured, tmp_path):
    table = pd.DataFrame({"model": ["mlp", "vae"], "paper_accuracy": [54.44, None], "accuracy": [55.1, 40.0],
                          "accuracy_low": [54.0, 38.0], "accuracy_high": [56.2, 42.0], "flag": ["ok", "ok"]})
    report.plot_accuracy(table, "cifar10", tmp_path / "a.png")
    ax = captured[0].axes[0]
    ticks = ax.get_yticks()
    bars = sorted(ax.patches, key=lambda p: p.get_y())
    mlp = [p for p in bars if round(p.get_width(), 2) in (54.44, 55.1)]
    assert np.isclose(np.mean([p.get_y() + p.get_height() / 2 for p in mlp]), ticks[0])  # the pair straddles it
    vae = [p for p in bars if round(p.get_width(), 2) == 40.0][0]
    assert np.isclose(vae.get_y() + vae.get_height() / 2, ticks[1])  # a lone bar sits on it
    (segments,) = [c.get_segments() for c in ax.collections if len(c.get_segments()) == 2]
    assert sorted(round(seg[0][0], 2) for seg in segments) == [38.0, 54.0]  # the error bars' left ends


def test_accuracy_chart_is_legible_at_a_seven_inch_text_width(captured, tmp_path):
    table = chart_table(STUDY, [54.44, 77.33, 89.07, None, 73.24, 95.42, 68.11, None, None, None, None])
    report.plot_accuracy(table, "cifar10", tmp_path / "a.png", report.ablation_chart_rows(
        {"name": "cifar10", "paper_dataset": True}, ABLATIONS))
    fig = captured[0]
    assert fig.get_figwidth() <= 7.0
    import matplotlib.text
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
    assert min(sizes) >= 7  # points, at print size: the figure is not scaled down to fit a page


STUDY = ["mlp", "cnn", "resnet18", "resnet18_pretrained", "vit_tiny", "vit_b16_probe", "patch_lstm", "vae",
         "vae_4000", "acgan", "acgan_4000"]
ABLATIONS = pd.DataFrame({"variant": ["cnn_nobn", "vit_tiny_heads3", "vit_tiny_patch4", "resnet18_noresidual"],
                          "base": ["cnn", "vit_tiny", "vit_tiny", "resnet18"], "accuracy": [70.1, 68.0, 66.2, 100.0],
                          "paper_accuracy": [None, 69.17, None, None]})


def chart_table(models, paper_accuracy=None, flags=None):
    n = len(models)
    return pd.DataFrame({"model": models, "paper_accuracy": paper_accuracy or [None] * n,
                         "accuracy": np.linspace(40, 100, n).round(2), "flag": flags or ["ok"] * n})


def test_accuracy_chart_puts_each_ablation_hatched_beside_its_base(captured, tmp_path):
    table = chart_table(["mlp", "cnn", "vit_tiny"], [54.44, 77.33, 73.24], ["ok", "ok", "not comparable (setting)"])
    cifar = {"name": "cifar10", "paper_dataset": True}
    ablations = report.ablation_chart_rows(cifar, ABLATIONS[ABLATIONS["base"] != "resnet18"])
    report.plot_accuracy(table, "cifar10", tmp_path / "a.png", ablations)
    ax = captured[0].axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        "mlp", "cnn", "cnn_nobn (ablation of cnn)", "vit_tiny *",
        "vit_tiny_heads3 (ablation of vit_tiny)",  # its paper number is for its own setting: comparable
        "vit_tiny_patch4 (ablation of vit_tiny)"]
    ticks = ax.get_yticks()
    assert ticks[2] - ticks[1] < ticks[1] - ticks[0]  # a base and its ablations stand together
    hatched = sorted(round(p.get_width(), 2) for p in ax.patches if p.get_hatch())
    assert hatched == [66.2, 68.0, 69.17, 70.1]  # the ablations' bars, the heads3 paper bar included, and no other
    assert _legend(captured[0]) == ["paper (CIFAR-10, P100)", "reproduced (cifar10)", "ablation (below its base)"]


def _overlapping_texts(fig) -> list[tuple[str, str]]:
    """Pairs of texts whose drawn pixels touch: each text is drawn alone over the figure without
    texts, and the pixels it changes are its mask. Texts are made transparent, not hidden, so that
    every text keeps the place the layout gave it (an axis label moves when its tick labels hide)."""
    import matplotlib.text

    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
    alphas = [t.get_alpha() for t in texts]

    def render():
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()

    for t in texts:
        t.set_alpha(0)
    blank, masks = render(), []
    for t, alpha in zip(texts, alphas):
        t.set_alpha(alpha)
        masks.append((render() != blank).any(axis=-1))
        t.set_alpha(0)
    return [(a.get_text(), b.get_text()) for i, (a, ma) in enumerate(zip(texts, masks))
            for b, mb in zip(texts[i + 1:], masks[i + 1:]) if (ma & mb).any()]


def test_no_label_of_the_accuracy_chart_runs_into_another(captured, tmp_path):
    """The study's models and ablations, long names, a starred row, bars of equal height side by side."""
    papers = [54.44, 77.33, 89.07, None, 73.24, 95.42, 68.11, None, None, None, None]
    flags = ["ok"] * 5 + ["not comparable (setting)"] + ["ok"] * 5
    table = chart_table(STUDY, papers, flags).assign(accuracy=[100.0] * 6 + [99.9] * 5)
    for paper_dataset in (True, False):
        ablations = report.ablation_chart_rows({"name": "d", "paper_dataset": paper_dataset}, ABLATIONS)
        report.plot_accuracy(table.assign(accuracy_low=90.0, accuracy_high=100.0), "d", tmp_path / "a.png",
                             ablations, paper_dataset=paper_dataset)
        assert _overlapping_texts(captured[-1]) == [], paper_dataset


def test_curves_name_the_papers_dataset_and_hardware_on_its_reference_line(captured, tmp_path):
    history = pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "test_loss": [1.1, 0.6],
                            "test_accuracy": [50.0, 70.0]})
    report.plot_curves("m", history, 73.24, tmp_path / "c.png")
    labels = [t.get_text() for t in captured[0].axes[1].get_legend().get_texts()]
    assert "paper (CIFAR-10, P100): 73.24%" in labels


def test_curves_of_one_epoch_show_it_on_an_integer_axis_with_its_interval(captured, tmp_path):
    """The demo's resnet18 trains one epoch: a point on tick 1, not on an axis from 0.945 to 1.05."""
    history = pd.DataFrame({"epoch": [1], "train_loss": [0.9], "test_loss": [0.4], "test_accuracy": [94.0]})
    report.plot_curves("resnet18", history, None, tmp_path / "c.png", images=360)
    fig = captured[0]
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks == [1.0] and ax.get_xlim()[1] - ax.get_xlim()[0] >= 0.9
    ((low, high),) = [seg[:, 1] for c in fig.axes[1].collections for seg in c.get_segments()]  # one epoch: a bar
    half = 100 * 1.96 * np.sqrt(0.94 * 0.06 / 360)  # 2.45 points, by hand
    assert high == pytest.approx(94.0 + half, abs=0.01) and low == pytest.approx(94.0 - half, abs=0.01)
    assert "95% interval, 360 test images" in [t.get_text() for t in fig.axes[1].get_legend().get_texts()]


def test_every_text_of_a_confusion_matrix_stays_inside_the_figure(captured, tmp_path):
    """The longest model name of the study (the demo's figure cut its title off at the left edge)."""
    import matplotlib.text

    classes = [str(i) for i in range(10)]
    confusion = pd.DataFrame(np.eye(10, dtype=int) * 36, index=classes, columns=classes)
    report.plot_confusion("resnet18_pretrained", confusion, tmp_path / "c.png")
    fig = captured[0]
    fig.canvas.draw()
    inside = fig.bbox.padded(1)  # a pixel of rounding
    outside = [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()
               and not (inside.contains(*t.get_window_extent().min) and inside.contains(*t.get_window_extent().max))]
    assert outside == []


def test_figures_are_saved_at_200_dpi(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1])
    save_figure(fig, tmp_path / "f.png")
    with Image.open(tmp_path / "f.png") as img:
        assert np.allclose(img.info["dpi"], (200, 200), atol=1) and img.size == (400, 200)


def test_every_figure_also_gets_a_pdf_twin_written_atomically_and_reproducibly(tmp_path):
    import matplotlib.pyplot as plt

    pdfs = []
    for _ in range(2):
        fig, ax = plt.subplots(figsize=(2, 1))
        ax.imshow(np.eye(4))  # a raster part, as in the attention and samples figures
        save_figure(fig, tmp_path / "f.png")
        pdfs.append((tmp_path / "f.pdf").read_bytes())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]  # no temp file left behind
    assert pdfs[0].startswith(b"%PDF-") and pdfs[0].rstrip().endswith(b"%%EOF")
    assert pdfs[0] == pdfs[1]  # no creation date: a rerun writes the same bytes


def test_figures_are_written_only_through_save_figure():
    """So every figure a stage draws gets its PDF twin."""
    calls = {path.name: len(re.findall(r"\.savefig\(", path.read_text()))
             for path in (ROOT / "reprozoo").rglob("*.py")}
    assert {name: n for name, n in calls.items() if n} == {"io.py": 2}  # save_figure: PNG, PDF


def test_the_attention_and_samples_stages_write_pdf_twins(demo_cfg, digits_npz, tmp_path):
    from reprozoo.attention import attention_figure
    from reprozoo.io import save_torch
    from reprozoo.models import create_model
    from reprozoo.samples import samples_figure

    history = tmp_path / "history.csv"
    pd.DataFrame({"epoch": [1, 2], "train_discriminator": [1.0, 0.9], "train_generator": [1.0, 1.1]}).to_csv(history, index=False)
    for name, draw in (("vit_tiny", attention_figure), ("acgan", samples_figure)):
        cfg = tiny_model_cfg(demo_cfg, name)
        save_torch(tmp_path / f"{name}.pt", create_model(cfg["arch"], 10, **cfg["args"]).state_dict())
        args = (history,) if draw is samples_figure else ()
        draw(cfg, digits_npz, tmp_path / f"{name}.pt", *args, tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / f"{name}.pdf").read_bytes()[:5] == b"%PDF-", name


def test_attention_maps_of_two_models_share_one_colour_scale(demo_cfg, digits_npz, tmp_path, monkeypatch):
    """vit_tiny and its 3-head ablation: the same norm on every map, so colours compare across models."""
    import matplotlib.image

    import reprozoo.attention as attention
    from reprozoo.io import save_torch
    from reprozoo.models import create_model

    figures = []
    monkeypatch.setattr(attention, "save_figure", lambda fig, path: figures.append(fig))
    for heads in (8, 3):
        cfg = tiny_model_cfg(demo_cfg, "vit_tiny")
        cfg["args"] = {**cfg["args"], "heads": heads}
        save_torch(tmp_path / f"{heads}.pt", create_model(cfg["arch"], 10, **cfg["args"]).state_dict())
        attention.attention_figure(cfg, digits_npz, tmp_path / f"{heads}.pt", tmp_path / f"{heads}.png")
    norms = [(im.norm.vmin, im.norm.vmax) for fig in figures for ax in fig.axes
             for im in ax.get_images() if im.get_cmap().name == "inferno"]
    assert len(norms) >= 4 and set(norms) == {attention.SCALE}


def test_the_vae_figure_fills_its_area_and_labels_its_rows(demo_cfg, digits_npz, tmp_path, monkeypatch):
    import reprozoo.samples as samples
    from reprozoo.io import save_torch
    from reprozoo.models import create_model

    figures = []
    monkeypatch.setattr(samples, "save_figure", lambda fig, path: figures.append(fig))
    history = tmp_path / "history.csv"
    pd.DataFrame({"epoch": [1], "train_loss": [1.0]}).to_csv(history, index=False)
    cfg = tiny_model_cfg(demo_cfg, "vae")
    save_torch(tmp_path / "vae.pt", create_model(cfg["arch"], 10, **cfg["args"]).state_dict())
    samples.samples_figure(cfg, digits_npz, tmp_path / "vae.pt", history, tmp_path / "vae.png")
    fig = figures[0]
    fig.canvas.draw()
    recon, grid = fig.axes
    assert [t.get_text() for t in recon.get_yticklabels()] == ["test", "reconstructed"]
    assert [t.get_text() for t in grid.get_yticklabels()] == [str(i) for i in range(10)]
    for ax in (recon, grid):  # the image fills its panel: at most a tenth of the panel's area blank
        image = ax.get_images()[0].get_window_extent()
        panel = ax.get_window_extent()
        assert image.width * image.height >= 0.9 * panel.width * panel.height
