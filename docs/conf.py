"""Sphinx configuration of meanfield's documentation: API reference from the numpydoc docstrings (autodoc +
autosummary + numpydoc), the Markdown pages through myst-parser, and the tutorials in ../examples run by sphinx-gallery
at build time. Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html``."""
import os
import sys

sys.path.insert(0, os.path.abspath(".."))   # the checkout's meanfield, not an installed copy
os.environ.setdefault("MPLBACKEND", "Agg")

import meanfield  # noqa: E402

project = "meanfield"
author = "The meanfield developers"
copyright = "2026, The meanfield developers"
version = release = meanfield.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip",
                    "auto_examples/*.md5", "auto_examples/*.codeobj.json", "**/sg_execution_times.rst"]
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": "BaseException", "show-inheritance": False}
autodoc_typehints = "none"            # the numpydoc Parameters sections carry the types
autodoc_member_order = "bysource"
numpydoc_show_class_members = False   # autodoc lists the members
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = False

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",   # run the plot_*.py tutorials; the others (minutes of torch training) are shown unrun
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "min_reported_time": 1,
}

html_theme = "alabaster"
html_theme_options = {"description": "Infinite-width theory of deep networks, checked against finite ones",
                       "fixed_sidebar": True, "page_width": "1100px", "sidebar_width": "220px"}
html_static_path = []
suppress_warnings = ["config.cache"]   # sphinx-gallery's conf entries are not picklable


# The docstrings write absolute values in plain text, |V'(q*)|, which reST would read as substitutions. Escape the bars
# outside literals, roles and math blocks (reST tables, which start with | or +, are left alone).
def _escape_bars(line: str) -> str:
    parts = line.split("`")
    return "`".join(p.replace("|", r"\|") if i % 2 == 0 else p for i, p in enumerate(parts))


def _process_docstring(app, what, name, obj, options, lines):
    math_indent = None
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if math_indent is not None and (not stripped or indent > math_indent):
            continue
        math_indent = indent if stripped.startswith(".. math::") else None
        if math_indent is not None or stripped.startswith(("|", "+")) or "|" not in line:
            continue
        lines[i] = _escape_bars(line)


def setup(app):
    app.connect("autodoc-process-docstring", _process_docstring)
