"""The report of a run: one self-contained HTML file, and every figure as PNG and SVG.

:func:`build_report` reads what the notebook sequence (:mod:`lhc.workbench`) left in a run
directory (``profile.yaml``, ``metrics.json``, ``data_report.json``, ``evaluation.json``,
``workbench.json``, ``figures/``, the executed notebooks) and writes
``reports/<run name>/report.html`` with the figures embedded as base64 PNGs, plus
``figures/NAME.png`` and ``figures/NAME.svg``. With ``images=False`` no figure that shows a
face (:data:`FACE_FIGURES`) is embedded or copied, so that a report of a run on real data can
be committed without any piece of the data set.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import os
import re
import shutil
import struct
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lhc._io import write_text
from lhc.workbench import environment_summary, notebook_sequence, read_manifest

# Figures that show faces, by name prefix: the notebooks' sample grids, augmentation
# previews and attention overlays. Every figure drawn on images of the data must be named
# with one of these prefixes, or --no-images would let it into a report. (Notebook 04's
# evaluate_tta_views draws a generated synthetic face, never the data set, and stays.)
FACE_FIGURES = ("data_samples_per_class", "data_augmentation_", "attention_overlay_",
                "evaluate_sample_predictions_attention")
# Report sections of the figures, by name prefix, in report order; the rest go last.
FIGURE_SECTIONS = (
    ("data_", "Data"),
    ("learning_curves_", "Training"),
    ("evaluate_", "Evaluation"),
    ("ablation_", "Ablations"),
    ("heads_", "Head correlation"),
    ("attention_peers", "Attention peers under one protocol"),
    ("attention_", "Attention maps"),
    ("dynamic_scaling_", "Dynamic scaling"),
    ("efficiency_", "Efficiency of local against global heads"),
)
OTHER_FIGURES = "Other figures"
PEERS_FILE = "attention_peers.json"  # notebook 08_attention_peers' table of a sweep
REPORT_NOTEBOOK = "09_report"  # its own outputs are the summary of a report, not results
# A PNG's width and height are the first two fields of its IHDR chunk (bytes 16-24).
_PNG_SIZE = struct.Struct(">II")
# Figures are saved at 150 dpi (lhc.plots.STYLE); at 96 CSS px per inch they keep their size.
_DISPLAY_SCALE = 96 / 150
_NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?$")

__all__ = ["FACE_FIGURES", "Report", "build_report", "report_folder", "shows_faces"]


@dataclasses.dataclass(frozen=True)
class Report:
    """What :func:`build_report` wrote.

    Attributes:
        html_path: the report file.
        figures: names of the figures reported (each as ``figures/NAME.png`` and ``.svg``).
        left_out: names of the figures left out because they show faces.
        sections: the report's section titles, in order.
        size_bytes: the size of the HTML file.
    """

    html_path: Path
    figures: tuple[str, ...]
    left_out: tuple[str, ...]
    sections: tuple[str, ...]
    size_bytes: int

    def summary(self) -> str:
        """A few lines for a terminal or a notebook: where the report is and what it holds."""
        lines = [f"report: {self.html_path} ({self.size_bytes / 2**20:.1f} MiB)",
                 f"sections: {', '.join(self.sections)}",
                 f"figures: {len(self.figures)} (PNG and SVG in {self.html_path.parent / 'figures'})"]
        if self.left_out:
            lines.append(f"left out (they show faces): {', '.join(self.left_out)}")
        return "\n".join(lines)


def shows_faces(figure_name: str) -> bool:
    """True for the figures drawn on images of the data (:data:`FACE_FIGURES`)."""
    return figure_name.startswith(FACE_FIGURES)


def report_folder(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Where :func:`build_report` writes: ``out``, or ``reports/<run name>`` by default."""
    return Path(out) if out else Path("reports") / Path(run_dir).resolve().name


def build_report(run_dir: str | os.PathLike, out: str | os.PathLike | None = None,
                 images: bool = True) -> Report:
    """Write the HTML report of a run and copy its figures (the ``lhc report`` command).

    ``out/figures/`` is replaced as a whole, so a report built without images never keeps
    face figures from an earlier build; ``report.html`` is written atomically last.

    Args:
        run_dir: the run directory the notebooks wrote.
        out: the report folder; default ``reports/<run name>``.
        images: False leaves out every figure that shows faces (:data:`FACE_FIGURES`).

    Returns:
        A :class:`Report` naming what was written.

    Raises:
        FileNotFoundError: ``run_dir`` does not exist.
        ValueError: ``out`` is the run directory, or one of its JSON files is not valid JSON.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory (make one with `lhc run`)")
    out = report_folder(run_dir, out)
    if out.resolve() == run_dir.resolve():
        raise ValueError(f"{out}: the report needs a folder of its own, not the run directory")
    # In the order the notebooks saved them, which follows their narrative.
    all_figures = [path.stem for path in sorted((run_dir / "figures").glob("*.png"),
                                                key=lambda path: (path.stat().st_mtime, path.name))]
    figures = [name for name in all_figures if images or not shows_faces(name)]
    left_out = [name for name in all_figures if name not in figures]
    # Everything is read before anything is written: bad input leaves an old report as it was.
    sections = _sections(run_dir, figures)
    page = _page(run_dir.resolve().name, sections, images, left_out)
    _replace_figures(run_dir / "figures", figures, out / "figures")
    write_text(out / "report.html", page)
    return Report(out / "report.html", tuple(figures), tuple(left_out),
                  tuple(title for title, _ in sections), (out / "report.html").stat().st_size)


def _replace_figures(source: Path, names: list[str], destination: Path) -> None:
    """Copy ``names`` (PNG and SVG) into a fresh folder and swap it in for ``destination``."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".figures.", dir=destination.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; a report folder is to be shared
    try:
        for name in names:
            for suffix in (".png", ".svg"):
                if (source / f"{name}{suffix}").exists():
                    shutil.copyfile(source / f"{name}{suffix}", staging / f"{name}{suffix}")
        old = None
        if destination.exists():
            old = destination.rename(destination.with_name(f".figures.old.{os.getpid()}"))
        staging.rename(destination)
        if old is not None:
            shutil.rmtree(old)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


# ---------------------------------------------------------------------------------------------
# Sections: each is (title, HTML body).


def _sections(run_dir: Path, figures: list[str]) -> list[tuple[str, str]]:
    metrics = _read_json(run_dir / "metrics.json")
    manifest = read_manifest(run_dir)
    sections = {"Run": _run_section(run_dir, metrics, manifest),
                "Data": _data_section(run_dir, metrics),
                "Training": _training_section(metrics)}
    evaluation = _read_json(run_dir / "evaluation.json")
    if evaluation is not None:
        sections["Evaluation"] = _evaluation_section(evaluation)
    peers = _read_json(run_dir / PEERS_FILE)
    if peers is not None:
        sections["Attention peers under one protocol"] = (
            f"<p>Sweep <code>{html.escape(str(peers['sweep_dir']))}</code>: every arm is stage 4 "
            "from one backbone on the same seeds; differences are paired by seed, with 95% "
            "bootstrap intervals and sign-flip p-values (notebook 08_attention_peers).</p>"
            + _table(_markdown_rows(peers["table"])))
    # A section's figures follow its tables; analysis sections hold only figures.
    for title, names in _figures_by_section(figures).items():
        sections[title] = sections.get(title, "") + "".join(
            _figure_html(run_dir / "figures", name) for name in names)
    sections["Notebook outputs"] = _notebook_outputs(run_dir / "notebooks")
    sections["Environment"] = _environment_section(manifest)
    return [(title, body) for title, body in sections.items() if body]


def _figures_by_section(figures: list[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name in figures:
        title = next((title for prefix, title in FIGURE_SECTIONS if name.startswith(prefix)),
                     OTHER_FIGURES)
        grouped.setdefault(title, []).append(name)
    order = [title for _, title in FIGURE_SECTIONS] + [OTHER_FIGURES]
    return {title: grouped[title] for title in dict.fromkeys(order) if title in grouped}


def _run_section(run_dir: Path, metrics: dict | None, manifest: dict) -> str:
    parts = []
    if metrics is not None:
        parts.append(_key_values({
            "profile": metrics.get("profile"), "input size": metrics.get("input_size"),
            "mode": metrics.get("mode"), "precision": metrics.get("precision"),
            "seed": metrics.get("seed"), "status": metrics.get("status")}))
    finished = [record for record in manifest["notebooks"] if record["status"] != "running"]
    if finished:
        parts.append("<h3>Notebooks run (<code>lhc run</code>)</h3>" + _table(
            [{"notebook": record["notebook"], "status": record["status"],
              "wall seconds": f"{record['seconds']:.1f}"} for record in finished]))
    profile = run_dir / "profile.yaml"
    if profile.exists():
        parts.append("<details><summary>The profile used (<code>profile.yaml</code>)</summary>"
                     f"<pre>{html.escape(profile.read_text())}</pre></details>")
    return "".join(parts)


def _data_section(run_dir: Path, metrics: dict | None) -> str:
    parts = []
    if metrics is not None and "data" in metrics:
        data = metrics["data"]
        parts.append("<h3>Training data</h3>" + _key_values({
            "source": data.get("source"), "split convention": data.get("split_convention"),
            "test split carved from train": data.get("test_is_carved"),
            "rows per split": ", ".join(f"{name} {count:,}"
                                        for name, count in sorted(data.get("counts", {}).items(),
                                                                  key=_split_order))}))
        parts.extend(f"<p class='note'>{html.escape(note)}</p>" for note in data.get("notes", []))
    report = _read_json(run_dir / "data_report.json")
    if report is not None:
        parts.append("<h3>Data report (notebook 01)</h3>" + _key_values({
            "split convention": report.get("split_convention"),
            "test split carved from train": report.get("test_is_carved")}))
        parts.extend(f"<p class='note'>{html.escape(note)}</p>" for note in report.get("notes", []))
        parts.append(_table([
            {"split": name, "rows": stats["rows"], **stats["class_counts"],
             "pixel mean": stats["pixel_mean"], "pixel std": stats["pixel_std"],
             "blank images": stats["blank_images"]}
            for name, stats in sorted(report["splits"].items(), key=_split_order)]))
        duplicates = report.get("duplicates", {})
        parts.append(_key_values({
            "rows repeating an earlier image": duplicates.get("repeated_rows"),
            "groups of identical images": duplicates.get("groups"),
            "groups across splits": duplicates.get("groups_across_splits"),
            "groups with conflicting labels": duplicates.get("groups_with_conflicting_labels"),
            "rows skipped as invalid": len(report.get("skipped_rows", []))}))
    return "".join(parts)


# metrics.json key -> column title of the training table.
STAGE_COLUMNS = {"epochs_run": "epochs", "stopped_by": "stopped by", "best_epoch": "best epoch",
                 "train_loss": "train loss", "val_accuracy": "val acc",
                 "test_accuracy": "test acc", "params": "params",
                 "trainable_params": "trainable"}


def _stage_order(stage: str) -> tuple[int, str]:
    """The protocol's order (stage1..stage4, lhcc); JSON files sort their keys by name."""
    from lhc.training.profiles import STAGES

    return (STAGES.index(stage) if stage in STAGES else len(STAGES), stage)


def _training_section(metrics: dict | None) -> str:
    if metrics is None or not metrics.get("stages"):
        return ""
    rows = [{"stage": stage, "model": model,
             **{title: result.get(key) for key, title in STAGE_COLUMNS.items()},
             "wall s": f"{result['wall_seconds']:.1f}" if "wall_seconds" in result else None}
            for stage in sorted(metrics["stages"], key=_stage_order)
            for model, result in metrics["stages"][stage].items()]
    parts = ["<p>Each stage keeps its best epoch (highest validation accuracy).</p>", _table(rows)]
    if "acceptance" in metrics:
        verdict = metrics["acceptance"]
        parts.append(f"<p>Acceptance rule ({html.escape(verdict['rule'])}): "
                     f"<b>{'kept' if verdict['kept'] else 'rejected'}</b>; "
                     f"{html.escape(verdict['reason'])}.</p>")
    return "".join(parts)


def _split_order(item: tuple[str, Any]) -> tuple[int, str]:
    order = ("train", "val", "test")
    return (order.index(item[0]) if item[0] in order else len(order), item[0])


def _evaluation_section(evaluation: dict) -> str:
    """Notebook 04's ``evaluation.json``: accuracy without and with TTA per model, the seed and
    literature tables, and (folded) everything per model: per-class metrics, confusion matrices.
    """
    protocol = evaluation.get("tta") or {}
    parts = [_key_values({
        "split": evaluation.get("split"), "test split": evaluation.get("test_split"),
        "input size": evaluation.get("input_size"),
        "TTA protocol": f"{protocol.get('name')}: {len(protocol.get('views', []))} views, "
                        f"divisor {protocol.get('divisor_value')}" if protocol else None})]
    models = evaluation.get("models") or {}
    rows = []
    for key, result in sorted(models.items(), key=lambda item: _stage_order(item[0].split("/")[0])):
        plain, augmented = result.get("without_tta") or {}, result.get("with_tta") or {}
        rows.append({"model": key, **{f"{title}{suffix}": metrics.get(field)
                                      for title, field in _EVALUATION_COLUMNS
                                      for suffix, metrics in (("", plain),
                                                              (" with TTA", augmented))}})
    if rows:
        parts.append("<h3>Without and with TTA</h3>" + _table(rows))
    if evaluation.get("seed_table"):
        parts.append("<h3>Seed table</h3>" + _table(evaluation["seed_table"], SEED_COLUMNS))
    if evaluation.get("literature_table"):
        parts.append("<h3>Literature table</h3>"
                     + _table(evaluation["literature_table"], LITERATURE_COLUMNS))
    if models:
        parts.append("<details><summary>Per model: per-class metrics and confusion matrices"
                     f"</summary>{_json_html(models, level=4)}</details>")
    return "".join(parts)


# evaluation.json table keys -> column titles (the paper's wording, as notebook 04 shows them).
SEED_COLUMNS = {"model": "Model", "kept": "Kept runs", "top40": "Top 40%",
                "top40_without_best": "Top 40% w/o best", "top25": "Top 25%",
                "top25_without_best": "Top 25% w/o best", "best": "Best"}
LITERATURE_COLUMNS = {"model": "Model", "reference": "Ref.", "accuracy": "Accuracy (%)",
                      "tta": "TTA", "params_millions": "Params (M)", "attention_percent": "Att (%)",
                      "source": "Source", "test_split": "Test split"}
_EVALUATION_COLUMNS = (("accuracy", "accuracy"), ("loss", "loss"), ("macro F1", "macro_f1"),
                       ("tied top scores", "tied_top_scores"))


def _environment_section(manifest: dict) -> str:
    if "environment" in manifest:
        where = f"recorded by <code>lhc run</code> when the run started ({manifest['started']})"
        environment = manifest["environment"]
    else:
        where = "of the machine that built this report (the run recorded none)"
        environment = environment_summary()
    packages = environment["packages"]
    return f"<p>Versions and hardware {where}.</p>" + _key_values({
        "python": environment["python"], **packages, "platform": environment["platform"],
        "CPU": environment["cpu"], "CPU cores": environment["cpu_cores"],
        "memory": f"{environment['memory_gib']} GiB",
        "GPUs": ", ".join(environment["gpus"]) or "none"})


def _notebook_outputs(notebooks_dir: Path) -> str:
    """Each executed notebook's tables and printed text, folded, in sequence order.

    Only text: the figures come from ``run_dir/figures`` (where --no-images can leave them
    out), never from the notebooks' embedded images.
    """
    if not notebooks_dir.is_dir():
        return ""
    try:
        notebooks = notebook_sequence(notebooks_dir)
    except FileNotFoundError:
        return ""
    parts = []
    for path in notebooks:
        if path.stem == REPORT_NOTEBOOK:
            continue
        blocks = [_cell_outputs_html(cell.get("outputs", []))
                  for cell in json.loads(path.read_text())["cells"]
                  if "parameters" not in cell.get("metadata", {}).get("tags", [])]
        if any(blocks):
            parts.append(f"<details><summary>{html.escape(path.stem)}</summary>"
                         f"{''.join(blocks)}</details>")
    return "".join(parts)


def _cell_outputs_html(outputs: list[dict]) -> str:
    """A cell's printed text as one block (Keras prints line by line), its tables, its errors."""
    parts, printed = [], []
    for output in outputs:
        if output["output_type"] == "stream":
            if output["name"] == "stdout":
                printed.append(_text(output["text"]))
            continue
        if printed:
            parts.append(f"<pre>{html.escape(''.join(printed))}</pre>")
            printed = []
        if output["output_type"] == "error":
            parts.append(f"<pre class='error'>{html.escape(output['ename'])}: "
                         f"{html.escape(output['evalue'])}</pre>")
        elif "<table" in _text(output.get("data", {}).get("text/html", "")):
            parts.append(f"<div class='frame'>{_text(output['data']['text/html'])}</div>")  # pandas
    if printed:
        parts.append(f"<pre>{html.escape(''.join(printed))}</pre>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# HTML pieces.


def _figure_html(figures_dir: Path, name: str) -> str:
    png = (figures_dir / f"{name}.png").read_bytes()
    width, _ = _PNG_SIZE.unpack_from(png, 16)
    svg = f" · <a href='figures/{name}.svg'>SVG</a>" if (figures_dir / f"{name}.svg").exists() else ""
    return (f"<figure id='{name}'><img alt='{name}' width='{round(width * _DISPLAY_SCALE)}' "
            f"src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"
            f"<figcaption><code>{name}</code> · <a href='figures/{name}.png'>PNG</a>{svg}"
            "</figcaption></figure>")


def _format(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list | dict):
        return html.escape(json.dumps(value))
    return html.escape(str(value))


def _table(rows: list[dict], titles: dict[str, str] | None = None) -> str:
    """Rows of records as a table; ``titles`` (key -> title) puts its keys first, in its order."""
    titles = titles or {}
    columns = list(dict.fromkeys([*(key for key in titles if any(key in row for row in rows)),
                                  *(key for row in rows for key in row)]))
    head = "".join(f"<th>{html.escape(str(titles.get(column, column)))}</th>" for column in columns)
    body = "".join("<tr>" + "".join(_cell(row.get(column)) for column in columns) + "</tr>"
                   for row in rows)
    return f"<div class='frame'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def _cell(value: Any) -> str:
    text = _format(value)
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return f"<td class='num'>{text}</td>" if numeric or _NUMBER.match(text) else f"<td>{text}</td>"


def _markdown_rows(text: str) -> list[dict]:
    """A Markdown table's rows (header row, separator row, body rows) as records."""
    lines = [line.strip().strip("|").split("|") for line in text.strip().splitlines()]
    header = [cell.strip() for cell in lines[0]]
    return [dict(zip(header, (cell.strip() for cell in line), strict=True)) for line in lines[2:]]


def _key_values(values: dict) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(key))}</th><td>{_format(value)}</td></tr>"
                   for key, value in values.items())
    return f"<table class='kv'>{rows}</table>"


def _json_html(value: Any, level: int = 3) -> str:
    """Any JSON value as HTML: flat mappings as key-value tables, lists of records as tables,
    lists of lists as matrices, nested mappings under headings named by their keys.

    Parts of ``evaluation.json`` are shown this way, so the report needs no change when the
    evaluation adds a field.
    """
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        return _table(value)
    if _is_matrix(value):
        return "<table>" + "".join("<tr>" + "".join(_cell(item) for item in row) + "</tr>"
                                   for row in value) + "</table>"
    if not isinstance(value, dict):
        return f"<p>{_format(value)}</p>"
    scalars = {key: item for key, item in value.items() if not _is_nested(item)}
    parts = [_key_values(scalars)] if scalars else []
    for key, item in value.items():
        if _is_nested(item):
            heading = html.escape(str(key).replace("_", " "))
            parts.append(f"<h{min(level, 6)}>{heading}</h{min(level, 6)}>"
                         + _json_html(item, level + 1))
    return "".join(parts)


def _is_nested(value: Any) -> bool:
    return isinstance(value, dict) or _is_matrix(value) or (
        isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value))


def _is_matrix(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(row, list) for row in value)


def _anchor(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def _page(run_name: str, sections: list[tuple[str, str]], images: bool, left_out: list[str]) -> str:
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    contents = " · ".join(f"<a href='#{_anchor(title)}'>{html.escape(title)}</a>"
                          for title, _ in sections)
    no_images = ("" if images else
                 "<p class='note'>Built with <code>--no-images</code>: no figure shows a face "
                 f"of the data set ({len(left_out)} figures left out: "
                 f"{html.escape(', '.join(left_out)) or 'none'}).</p>")
    body = "".join(f"<section id='{_anchor(title)}'><h2>{html.escape(title)}</h2>{content}"
                   "</section>" for title, content in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>LHC-Net workbench report: {html.escape(run_name)}</title>
<style>{_CSS}</style></head>
<body><header><h1>LHC-Net workbench report: {html.escape(run_name)}</h1>
<p>Generated {generated} by <code>lhc report</code>. {contents}</p>{no_images}</header>
{body}
</body></html>
"""


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1150px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 2px solid #ccc; padding-top: .6em; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
thead th, table.kv th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: .5em 1em 1em 0; vertical-align: top;
         page-break-inside: avoid; }
figure img { max-width: 100%; height: auto; }
figcaption { font-size: .85em; color: #555; }
pre { background: #f7f7f7; padding: .5em; overflow-x: auto; font-size: .8em; }
pre.error { background: #fde8e8; }
details { margin: .4em 0; } summary { cursor: pointer; font-weight: 600; }
.note { background: #fff8e1; padding: .3em .6em; border-left: 3px solid #f0b400; }
.frame { overflow-x: auto; }
"""


# ---------------------------------------------------------------------------------------------
# Reading.


def _read_json(path: Path) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {error.lineno}: not valid JSON ({error.msg})") from None


def _text(value: str | list[str]) -> str:
    return "".join(value) if isinstance(value, list) else value
