"""The docs stay true to the tool: every page is linked from README, every `nbk` command and
option the nbk pages show exists."""

import re
from pathlib import Path

import click
from nbk.cli import main

REPO = Path(__file__).resolve().parents[2]
NBK_PAGES = ("build", "flash", "deploy", "provision", "monitor", "boards")


def test_readme_documentation_list_links_every_docs_page():
    readme = (REPO / "README.md").read_text()
    listing = readme.split("## Documentation", 1)[1]
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", listing))
    pages = {"docs/" + p.name for p in (REPO / "docs").glob("*.md")}
    assert pages - linked == set(), "add these to README.md's Documentation list"
    assert linked - pages == set(), "README.md links pages that do not exist"


def _command(words):
    """The click command `nbk words...` names, or None; with the words it consumed."""
    command, used = main, []
    for word in words:
        if not isinstance(command, click.Group) or word not in command.commands:
            break
        command = command.commands[word]
        used.append(word)
    return command, used


def test_every_nbk_command_and_option_in_the_docs_exists():
    seen = 0
    for page in NBK_PAGES:
        text = (REPO / "docs" / (page + ".md")).read_text()
        blocks = "\n".join(re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S))
        shown = re.findall(r"^(?:\$ )?(nbk [^\n]*)", blocks, flags=re.M)  # in code blocks
        shown += re.findall(r"`(nbk [^`\n]*)`", text)  # in prose
        for line in shown:
            line = line.split(" #", 1)[0]  # a comment after the command
            words = [w.strip("[]") for w in line.split()[1:]]
            words = [w for w in words if w not in ("--json", "-q", "--quiet")]
            if words and words[0].isupper():
                continue  # a placeholder: "nbk COMMAND --help"
            command, used = _command(words)
            assert used, "%s: %r names no nbk command" % (page, line)
            known = {opt for param in command.params for opt in param.opts}
            for word in words[len(used) :]:
                if word.startswith("--") and word not in ("--help",):
                    flag = word.split("=", 1)[0]
                    assert flag in known, "%s: %r: nbk %s has no %s" % (
                        page,
                        line,
                        " ".join(used),
                        flag,
                    )
            seen += 1
    assert seen > 30  # the pages really show commands


def _all_commands(group, path=()):
    for name, command in sorted(group.commands.items()):
        yield path + (name,), command
        if isinstance(command, click.Group):
            yield from _all_commands(command, path + (name,))


def test_every_command_has_a_whole_help_line_and_documented_options():
    from click.testing import CliRunner

    for path, command in _all_commands(main):
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0, path
        assert not command.get_short_help_str(limit=66).endswith("..."), path
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help, "nbk %s %s has no help text" % (" ".join(path), param.opts)
    listing = CliRunner().invoke(main, ["--help"]).output.split("Commands:", 1)[1]
    assert "..." not in listing  # click cuts a summary that does not fit
