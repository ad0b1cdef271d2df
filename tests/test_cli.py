"""The one ``kefer`` command: its subcommands, and the shims app.py and train.py."""
import subprocess
import sys
from pathlib import Path

import pytest

from kefer.cli import COMMANDS, main
from kefer.cli.lab import COMMANDS as LAB_COMMANDS

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_kefer_help_lists_every_subcommand():
    done = run("-m", "kefer", "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("app", "analyze", "train", "evaluate", "export", "prepare", "lab"):
        assert f"\n  {name} " in done.stdout
    assert set(COMMANDS) == {"app", "analyze", "train", "evaluate", "export", "prepare", "lab"}


def test_kefer_lab_lists_the_research_tools():
    done = run("-m", "kefer", "lab", "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    for name in LAB_COMMANDS:
        assert f"\n  {name} " in done.stdout


@pytest.mark.parametrize("argv", [["nonsense"], ["lab", "nonsense"]])
def test_an_unknown_subcommand_is_an_error_that_names_the_choices(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_no_subcommand_shows_the_list(capsys):
    assert main([]) == 2 and "commands:" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_subcommand_has_help_under_its_own_name(name):
    done = run("-m", "kefer", name, "--help")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"usage: kefer {name}" in done.stdout


def test_train_help_groups_its_flags_as_a_user_thinks_of_them():
    out = run("-m", "kefer", "train", "--help").stdout
    positions = [out.find(f"\n{group}:") for group in ("data", "model", "losses", "schedule", "augmentation", "output")]
    assert -1 not in positions and positions == sorted(positions), out[:3000]


@pytest.mark.parametrize("script, prog", [("app.py", "kefer app"), ("train.py", "kefer train")])
def test_the_top_level_scripts_are_thin_shims(script, prog):
    done = run(script, "--help")
    assert done.returncode == 0 and f"usage: {prog}" in done.stdout, done.stderr[-2000:]
