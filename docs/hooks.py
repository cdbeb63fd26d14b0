"""mkdocs hooks (mkdocs.yml `hooks:`): the parts of the documentation made at build time.

- bench-results.md and changelog.md are bench/RESULTS.md and CHANGELOG.md as they are in
  the repository (one copy of each text, outside docs/).
- `<!-- cli-help -->` in a page becomes the --help of `mininet` and of every command and
  subcommand, walked from the Typer app in a child process (plain text: TYPER_USE_RICH=0).
- `<!-- api: MODULE [exclude=A,B] -->` becomes a mkdocstrings block listing MODULE's
  public names: its __all__, else every class and function defined in MODULE or in a
  module below it (so a class added to mininet.nn appears without editing the page).
- `<!-- api-package: PACKAGE -->` becomes one block per module of PACKAGE (each showing
  what that module defines), so a new module appears without editing the page.

Any failure stops the build: a reference that is out of date is worse than none.
"""
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:   # document the checkout mkdocstrings reads (paths: [.])
    sys.path.insert(0, str(ROOT))
COPIED = {"bench-results.md": "bench/RESULTS.md", "changelog.md": "CHANGELOG.md"}
API_MARKER = re.compile(r"^<!-- api: ([\w.]+)((?: \w+=[\w,]+)*) -->$", re.M)
PACKAGE_MARKER = re.compile(r"^<!-- api-package: ([\w.]+) -->$", re.M)
CLI_MARKER = "<!-- cli-help -->"

# Walks the click command tree under the Typer app and prints each command's help,
# separated by a line holding the command's full name.
CLI_WALK = r"""
import typer
from mininet.cli import app

def walk(cmd, ctx, path):
    print("\x00" + " ".join(path))
    print(cmd.get_help(ctx))
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if not getattr(sub, "hidden", False):
                walk(sub, sub.context_class(sub, info_name=name, parent=ctx, terminal_width=88,
                                            max_content_width=88), path + [name])

root = typer.main.get_command(app)
walk(root, root.context_class(root, info_name="mininet", terminal_width=88,
                              max_content_width=88), ["mininet"])
"""


def on_files(files, config):
    for uri, source in COPIED.items():
        text = (ROOT / source).read_text(encoding="utf-8")
        files.append(File.generated(config, uri, content=text))
    return files


def on_page_markdown(markdown, page, config, files):
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    markdown = PACKAGE_MARKER.sub(lambda m: package_blocks(m.group(1)), markdown)
    return API_MARKER.sub(lambda m: api_block(m.group(1), _options(m.group(2))), markdown)


def _options(text):
    return dict(item.split("=", 1) for item in text.split())


def cli_reference():
    env = {**os.environ, "TYPER_USE_RICH": "0", "COLUMNS": "88", "NO_COLOR": "1"}
    r = subprocess.run([sys.executable, "-c", CLI_WALK], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"docs: could not collect the CLI's help:\n{r.stderr[-2000:]}")
    sections = []
    for chunk in r.stdout.split("\x00")[1:]:
        name, _, text = chunk.partition("\n")
        text = text.replace("\\[", "[")   # rich's markup escape, printed as is without rich
        level = "#" * min(2 + name.count(" "), 4)
        sections.append(f"{level} `{name}`\n\n```text\n{text.rstrip()}\n```\n")
    return "\n".join(sections)


def public_names(modname, exclude=()):
    """(names to document, {alias: the name it aliases}) of a module."""
    module = importlib.import_module(modname)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n, obj in vars(module).items()
                 if not n.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
                 and _defined_under(obj, modname)]
    names = sorted(n for n in names
                   if n not in exclude and not inspect.ismodule(getattr(module, n)))
    aliases = {}
    for n in names:   # Conv2d = Conv: one entry, and a line naming the other spelling
        obj = getattr(module, n)
        own = getattr(obj, "__name__", None)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and own != n and own in names \
                and getattr(module, own) is obj:
            aliases[n] = own
    return [n for n in names if n not in aliases], aliases


def _defined_under(obj, modname):
    home = getattr(obj, "__module__", None) or ""
    return home == modname or home.startswith(modname + ".")


def api_block(modname, options):
    exclude = set(filter(None, options.get("exclude", "").split(",")))
    names, aliases = public_names(modname, exclude)
    module = importlib.import_module(modname)
    # values (dtypes, an instance such as mininet.accelerator) as a table: mkdocstrings
    # would show each as an empty attribute box
    values = [n for n in names if not (inspect.isclass(getattr(module, n))
                                       or inspect.isroutine(getattr(module, n)))]
    names = [n for n in names if n not in values]
    if not names:
        raise RuntimeError(f"docs: {modname} has no public names to document")
    text = ""
    if values:
        rows = "".join(f"| `{modname}.{n}` | {_describe(getattr(module, n))} |\n" for n in values)
        text += f"| name | value |\n| --- | --- |\n{rows}\n"
    if aliases:
        text += "Other spellings: " + "; ".join(
            f"`{a}` is [`{b}`][{modname}.{b}]" for a, b in sorted(aliases.items())) + ".\n\n"
    return text + f"::: {modname}\n    options:\n      members: [{', '.join(names)}]\n"


def _describe(value):
    """A value's table cell: a dtype's name, else its class's docstring's first line."""
    kind = getattr(value, "kind", None)
    if kind is not None and hasattr(value, "itemsize"):
        return f"the dtype `{value}`"
    doc = inspect.getdoc(type(value)) or repr(value)
    return doc.splitlines()[0].replace("|", "\\|")


def package_blocks(package):
    path = importlib.import_module(package).__path__
    modules = sorted(info.name for info in pkgutil.iter_modules(path)
                     if not info.name.startswith("_"))
    if not modules:
        raise RuntimeError(f"docs: {package} has no modules to document")
    return "\n".join(f"::: {package}.{name}\n    options:\n      show_root_heading: true\n"
                     f"      heading_level: 2\n" for name in modules)
