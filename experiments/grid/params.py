"""Read params.yaml (duplicate keys refused) and validate it into a `Grid`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from experiments.grid.checks import build_grid
from experiments.grid.layout import PARAMS_FILE
from experiments.grid.model import Grid, GridError


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that rejects duplicate keys (PyYAML silently keeps the last one)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise GridError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}: "
                            "each grid entry (and each cell) may appear only once")
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml as a mapping; GridError names the file and what is wrong with it."""
    try:
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except FileNotFoundError:
        raise GridError(f"{path}: no such file; run from the repository root (where dvc.yaml is) "
                        "or name the params file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise GridError(f"cannot read {path}: {err}") from None
    except GridError as err:
        raise GridError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise GridError(f"{path} is not valid YAML: {_yaml_problem(err)}; fix it there") from None
    if not isinstance(data, dict):
        raise GridError(f"{path}: expected a mapping with experiment, out_dir, grid and settings")
    return data


def _yaml_problem(err: yaml.YAMLError) -> str:
    """PyYAML's error in one line: what is wrong and where."""
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{getattr(err, 'problem', None) or err}{where}"


def load_grid(path: str | Path = PARAMS_FILE) -> Grid:
    """Read and validate params.yaml; GridError lists every problem found."""
    return build_grid(read_params(path), origin=str(path), root=Path(path).parent)
