"""MkDocs hooks: the pages that are generated rather than written.

- Every file under `models/` (cards, tables, plots, recipes, the scripts that made them) is
  added to the site, so pages link to them as they are committed. (The notebooks come in
  through the link `docs/notebooks`, so that mkdocs-jupyter renders them.)
- `<!-- tfcompress:include PATH -->` puts a committed markdown file (a card, a results table)
  into a page, its headings one level down and its links made relative to the page.
- `<!-- tfcompress:recipe-settings -->` and `<!-- tfcompress:builtin-recipes -->` are written
  from the recipe schema (`tfcompress/pipeline/_recipe.py`): every step's settings with their
  defaults, allowed values and meaning, and the built-in recipes as YAML.
"""

import os
import posixpath
import re

from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_INCLUDE = re.compile(r"<!-- tfcompress:include (\S+) -->")
_LINK = re.compile(r"(\]\()(?!https?:|#|/)([^)\s]+)(\))")


def on_files(files, config):
    for folder in ("models",):
        for base, _, names in os.walk(os.path.join(ROOT, folder)):
            for name in sorted(names):
                if name.startswith("."):
                    continue
                path = os.path.join(base, name)
                uri = os.path.relpath(path, ROOT).replace(os.sep, "/")
                if files.get_file_from_path(uri) is None:
                    files.append(File.generated(config, uri, abs_src_path=path))
    return files


def on_page_markdown(markdown, page, config, files):
    here = posixpath.dirname(page.file.src_uri)
    markdown = _INCLUDE.sub(lambda m: _include(m.group(1), here), markdown)
    if "<!-- tfcompress:recipe-settings -->" in markdown:
        markdown = markdown.replace("<!-- tfcompress:recipe-settings -->", _recipe_settings())
    if "<!-- tfcompress:builtin-recipes -->" in markdown:
        markdown = markdown.replace("<!-- tfcompress:builtin-recipes -->", _builtin_recipes())
    return markdown


def _include(path, here):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        text = f.read()
    where = posixpath.dirname(path)

    def relink(m):
        target = posixpath.normpath(posixpath.join(where, m.group(2)))
        return m.group(1) + posixpath.relpath(target, here or ".") + m.group(3)

    text = _LINK.sub(relink, text)
    return re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.M)


def _recipe_settings():
    from tfcompress.pipeline import _recipe

    rows, kind = [], None
    for row in _recipe.settings_table():
        if row["step"] != kind:
            kind = row["step"]
            rows += [f"\n### `{kind}`\n", "| setting | default | allowed | meaning |",
                     "|---|---|---|---|"]
        searched = " (searched)" if row["searched"] else ""
        rows.append(f"| `{row['setting']}`{searched} | `{_yaml_value(row['default'])}` | "
                    f"{row['allowed']} | {row['meaning']} |")
    return "\n".join(rows) + "\n"


def _builtin_recipes():
    from tfcompress.pipeline import _recipe

    return "\n".join(f"`{name}`:\n\n```yaml\n{_recipe.builtin_yaml(name)}```\n"
                     for name in _recipe.BUILTIN)


def _yaml_value(value):
    return {None: "null", True: "true", False: "false"}.get(value, value) \
        if not isinstance(value, (int, float)) or isinstance(value, bool) else value
