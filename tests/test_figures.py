"""Paper-grade figures: what the numbers in a figure mean matches its colour scale and
the table, and every figure is saved at print resolution, with a PDF twin."""
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import reprozoo.report as report
from conftest import ROOT, tiny_model_cfg


@pytest.fixture
def captured(monkeypatch):
    """The figures the plotting functions build, kept open instead of saved."""
    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, path: figures.append(fig))
    return figures


def test_confusion_cells_show_the_row_percent_the_colour_means(captured, tmp_path):
    confusion = pd.DataFrame([[8, 2], [1, 3]], index=["cat", "dog"], columns=["cat", "dog"])
    report.plot_confusion("m", confusion, tmp_path / "c.png")
    texts = [t.get_text() for t in captured[0].axes[0].texts]
    assert texts == ["80", "20", "25", "75"]
    assert "% of each true class" in captured[0].axes[0].get_title()


def test_accuracy_chart_marks_the_tables_not_comparable_rows(captured, tmp_path):
    table = pd.DataFrame({"model": ["mlp", "probe"], "paper_accuracy": [54.44, 95.42], "accuracy": [55.1, 42.4],
                          "flag": ["ok", "not comparable (setting)"]})
    report.plot_accuracy(table, "digits", tmp_path / "a.png")
    fig = captured[0]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["mlp", "probe *"]
    assert any(t.get_text().startswith("* not comparable") for t in fig.texts)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["paper (CIFAR-10, P100)", "reproduced (digits)"]


def test_curves_name_the_papers_dataset_on_its_reference_line(captured, tmp_path):
    history = pd.DataFrame({"epoch": [1, 2], "train_loss": [1.0, 0.5], "test_loss": [1.1, 0.6],
                            "test_accuracy": [50.0, 70.0]})
    report.plot_curves("m", history, 73.24, tmp_path / "c.png")
    labels = [t.get_text() for t in captured[0].axes[1].get_legend().get_texts()]
    assert "paper (CIFAR-10): 73.24%" in labels


def test_figures_are_saved_at_200_dpi(tmp_path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1])
    report.save_figure(fig, tmp_path / "f.png")
    with Image.open(tmp_path / "f.png") as img:
        assert np.allclose(img.info["dpi"], (200, 200), atol=1) and img.size == (400, 200)


def test_every_figure_also_gets_a_pdf_twin_written_atomically_and_reproducibly(tmp_path):
    import matplotlib.pyplot as plt

    pdfs = []
    for _ in range(2):
        fig, ax = plt.subplots(figsize=(2, 1))
        ax.imshow(np.eye(4))  # a raster part, as in the attention and samples figures
        report.save_figure(fig, tmp_path / "f.png")
        pdfs.append((tmp_path / "f.pdf").read_bytes())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.pdf", "f.png"]  # no temp file left behind
    assert pdfs[0].startswith(b"%PDF-") and pdfs[0].rstrip().endswith(b"%%EOF")
    assert pdfs[0] == pdfs[1]  # no creation date: a rerun writes the same bytes


def test_figures_are_written_only_through_save_figure():
    """So every figure a stage draws gets its PDF twin."""
    calls = {path.name: len(re.findall(r"\.savefig\(", path.read_text()))
             for path in (ROOT / "reprozoo").rglob("*.py")}
    assert {name: n for name, n in calls.items() if n} == {"report.py": 2}  # save_figure: PNG, PDF


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
