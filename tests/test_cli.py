"""The lhc command line, end to end in a subprocess, as a user runs it."""

import json
import subprocess
import sys

import numpy as np


def run_cli(*args, cwd=None):
    result = subprocess.run([sys.executable, "-m", "lhc.cli", *args], capture_output=True,
                            text=True, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_synth_then_data_report(tmp_path):
    csv_path = tmp_path / "synthetic.csv.gz"
    assert "wrote 300 synthetic images" in run_cli("synth", str(csv_path), "--n", "300")
    out = tmp_path / "report"
    text = run_cli("data-report", str(csv_path), "--out", str(out))
    report = json.loads((out / "data_report.json").read_text())
    assert sum(split["rows"] for split in report["splits"].values()) == 300
    assert "Training -> train" in text and "duplicates: 0 repeated rows" in text
    figures = sorted(path.name for path in (out / "figures").iterdir())
    assert figures == sorted(f"{name}.{ext}" for ext in ("png", "svg") for name in
                             ("data_class_distribution", "data_duplicates",
                              "data_pixel_statistics"))  # no faces unless --images


def test_data_report_names_the_bad_line(tmp_path):
    path = tmp_path / "fer2013.csv"
    pixels = " ".join(["1"] * 2304)
    path.write_text(f"emotion,pixels,Usage\n0,{pixels},Training\n0,{pixels} 5,Training\n")
    result = subprocess.run([sys.executable, "-m", "lhc.cli", "data-report", str(path), "--out",
                             str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "fer2013.csv, line 3" in result.stderr and "2304" in result.stderr
    assert "Traceback" not in result.stderr


def test_summary_prints_parameter_table_and_probabilities():
    text = run_cli("summary", "--input-size", "64")
    rows = {line.split()[0]: line.split() for line in text.splitlines()
            if line.startswith(("ResNet34v2", "LHC-Net", "LHC-NetC"))}
    assert set(rows) == {"ResNet34v2", "LHC-Net", "LHC-NetC"}
    resnet, lhc_net, lhc_netc = (int(rows[name][1].replace(",", "")) for name in
                                 ("ResNet34v2", "LHC-Net", "LHC-NetC"))
    lhc_params = int(rows["LHC-Net"][2].replace(",", ""))
    assert lhc_net == resnet + lhc_params  # the modules add exactly their own weights
    assert lhc_netc == lhc_net + 5  # one gate per module
    sums = [line for line in text.splitlines() if "rows sum to" in line]
    assert len(sums) == 3
    for line in sums:
        values = json.loads(line.split("rows sum to")[1])
        np.testing.assert_allclose(values, 1.0, atol=1e-3)
