"""The project's set-up files agree with each other."""

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _normalise(requirement: str) -> tuple[str, str]:
    parsed = Requirement(requirement)
    return parsed.name.lower().replace("_", "-"), str(parsed.specifier)


def test_environment_yml_lists_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    declared = project["dependencies"] + extras["tf"] + extras["jax"] + extras["test"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    conda_listed = [line for line in pip_section if not line.startswith("-")]
    assert sorted(map(_normalise, conda_listed)) == sorted(map(_normalise, declared))
    python_pin = next(item for item in env["dependencies"] if str(item).startswith("python="))
    assert python_pin == "python=3.11"
    assert project["requires-python"].startswith(">=3.11")


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme


def test_tensorflow_is_an_extra_not_a_requirement():
    """pip install -e '.[jax]' must not bring TensorFlow: it lives in the extra "tf" alone."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {_normalise(requirement)[0] for requirement in project["dependencies"]}
    assert not names & {"tensorflow", "tensorboard", "tensorflow-cpu"}
    assert {_normalise(r)[0] for r in project["optional-dependencies"]["tf"]} >= {"tensorflow"}
    assert {_normalise(r)[0] for r in project["optional-dependencies"]["jax"]} == {"jax"}
