"""Every subcommand's ``--help`` states the defaults the command really uses (read from the printed help)."""

from __future__ import annotations

import re

import pytest

from optimum_depth.cli import build_parser, main
from optimum_depth.cli import quickstart as quickstart_command
from optimum_depth.cli.common import config_from_args, with_recommended_recipe

TEXT = "../shared/data/calib"  # any calibration text: only its kind ("self" or not) matters here


def help_of(capsys, command: str) -> dict[str, str]:
    """``optimum-depth <command> --help``, as printed: option -> its help, wrapped lines joined."""
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out.split("\n\n", 1)[1]  # after the usage block
    chunks = re.split(r"^  (--[\w-]+)", text, flags=re.MULTILINE)
    return {option: " ".join(body.split()) for option, body in zip(chunks[1::2], chunks[2::2], strict=True)}


def stated(help_text: str, pattern: str) -> str:
    """The first group ``pattern`` captures in ``help_text`` (the stated default)."""
    match = re.search(pattern, help_text)
    assert match, f"no default stated in: {help_text}"
    return next(group for group in match.groups() if group is not None)


def config_of(command: str, *options: str):
    return config_from_args(build_parser().parse_args([command, *options, "--output-dir", "out"]))


def recipe(command: str, options: list[str], calibration: str):
    """The criterion and compensation ``command`` prunes with, given ``options`` and a calibration source."""
    args = build_parser().parse_args([command, *options, "--output-dir", "out"])
    build = quickstart_command.config_from_args if command == "quickstart" else config_from_args
    config = with_recommended_recipe(build(args), args, calibration)
    return config.criterion, config.compensation.method if config.compensation is not None else "none"


@pytest.mark.parametrize("command", ["prune", "score", "quickstart"])
def test_default_criterion_and_compensation_are_the_ones_used(capsys, command):
    options = help_of(capsys, command)
    criterion = stated(options["--criterion"], r"\(default (\w+):")
    fallback = stated(options["--criterion"], r"; (\w+) (?:when the calibration is 'self'|without calibration text)")
    sublayer = stated(options["--criterion"], r"(?:sublayers: (\w+)|(\w+) for sublayers)")
    compensation = stated(options["--compensation"], r"[Dd]efault:? (\w+) (?:for blocks )?when calibration text")
    assert recipe(command, [], TEXT) == (criterion, compensation) == ("auto", "reconstruct")
    assert recipe(command, [], "self") == (fallback, "none")
    assert recipe(command, ["--granularity", "sublayer"], TEXT) == (sublayer, "none")
    assert recipe(command, ["--criterion", "magnitude"], "self")[0] == "magnitude"  # an explicit choice stays


@pytest.mark.parametrize("command", ["prune", "score"])
def test_pruning_option_defaults_are_the_config_defaults(capsys, command):
    options = help_of(capsys, command)
    config = config_of(command, "--criterion", "sleb")
    for option, used in [
        ("--pruning-ratio", config.pruning_ratio),
        ("--num-samples", config.num_samples),
        ("--seed", config.seed),
        ("--batch-size", config.batch_size),
        ("--auto-max-seconds", config.auto_max_seconds),
        ("--distance", config.distance),
    ]:
        assert stated(options[option], r"\(default ([\w.]+)\)") == (
            f"{used:g}" if isinstance(used, float) else str(used)
        )
    assert stated(options["--seq-len"], r"\(default (\d+) for blocks") == str(config.seq_len)
    assert stated(options["--seq-len"], r"(\d+) for sublayers") == str(
        config_of(command, "--granularity", "sublayer").seq_len
    )
    plus = config_of(command, "--criterion", "magnitude")
    assert stated(options["--protect-first"], r"default: (\d+) for magnitude") == str(plus.resolved_protect_first)
    assert stated(options["--protect-last"], r"default: (\d+) for magnitude") == str(plus.resolved_protect_last)
    settings = config_of(command, "--compensation", "reconstruct").compensation
    assert stated(options["--compensation-samples"], r"\(default (\d+);") == str(settings.num_samples)
    assert stated(options["--compensation-samples"], r"sequences of (\d+) tokens") == str(settings.seq_len)
    assert stated(options["--compensation-selection"], r"\(default (\w+)\)") == settings.selection
    assert stated(options["--reconstruct-steps"], r"\(default (\d+)\)") == str(settings.reconstruct_steps)


@pytest.mark.parametrize("command", ["evaluate", "benchmark"])
def test_measurement_defaults_are_the_ones_used(capsys, command):
    options = help_of(capsys, command)
    args = build_parser().parse_args([command, "--output-dir", "o"])
    assert stated(options["--perplexity"], r"\(default ([\w,]+);") == (",".join(args.perplexity) or "none")
    batches = stated(options["--latency-batch-sizes"], r"\(default ([\w,]+);")
    assert batches == (",".join(map(str, args.latency_batch_sizes)) or "none")
    assert (batches, args.perplexity) == (("none", ["wikitext2"]) if command == "evaluate" else ("1,8", []))
