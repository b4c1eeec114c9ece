"""The one safe reader of checkpoint and weights files: nothing in a file ever runs.

`load_checkpoint` reads a `torch.save` file: the zip format memory-mapped with torch's
weights-only unpickler; the legacy format with a restricted unpickler of our own that reads from
disk only the tensors asked for (torch's reader where it cannot). Objects that taming's Lightning
checkpoints pickle beside the weights (Lightning's `ModelCheckpoint` and `AttributeDict`,
OmegaConf configs, `argparse.Namespace`, typing and numpy markers) load as inert stand-ins
defined here and come back as plain data; Lightning is never imported. Any other global
(`os.system`, `builtins.exec`, `subprocess.Popen`, ...) is refused with a `CheckpointError`
naming it, before anything is unpickled.

`load_weights` also reads safetensors files and OpenAI's TorchScript CLIP archives; those are
read as data (a restricted unpickler over the archive's `data.pkl`), never compiled or run.
"""
from __future__ import annotations

import io
import pickle
import pickletools
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, ClassVar, Iterator

import torch

from engine.errors import InputError
from engine.fsutil import regular_file

# Globals loaded as inert stand-ins: by module prefix, and by exact name.
_STAND_IN_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.", "typing.",
                      "numpy.dtypes.")
_STAND_IN_NAMES = {"argparse.Namespace", "numpy.dtype", "numpy.core.multiarray.scalar",
                   "numpy._core.multiarray.scalar"}
# Plain-data builtins, loaded as themselves (calling them runs no code from the file).
_PLAIN_TYPES = {f"builtins.{t.__name__}": t for t in (dict, list, tuple, int, float, str, bool, frozenset)}
# Globals torch's own weights-only unpickler judges (it refuses what it does not allow).
_TORCH_OWN = {"collections.OrderedDict", "collections.Counter", "_codecs.encode", "builtins.set",
              "builtins.bytearray", "builtins.complex"}


class CheckpointError(InputError):
    """A checkpoint, weights or config file that cannot be used; the message names the file."""


class UnsafeCheckpointError(CheckpointError):
    """A file whose pickle calls code: refused before any of it ran."""


class StandIn:
    """An inert placeholder for a pickled global: building or calling it only stores the data given."""

    global_name: ClassVar[str] = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "StandIn":
        obj = super().__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to do: `__new__` stored the arguments."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<stand-in {self.global_name}>"


@lru_cache(maxsize=None)
def stand_in_class(name: str) -> type[StandIn]:
    """The stand-in class for the global `name` (one per name, so a loaded object keeps its name)."""
    return type(name.rsplit(".", 1)[-1], (StandIn,), {"global_name": name, "__module__": __name__})


def _empty_dict(*_args: Any) -> dict:
    """`collections.defaultdict` stand-in: a plain dict (its default factory is dropped)."""
    return {}


def _posix_path(*parts: str) -> str:
    """`pathlib` path stand-in (hyper-parameters may hold paths): the path as text."""
    return str(PurePosixPath(*parts))


def _windows_path(*parts: str) -> str:
    return str(PureWindowsPath(*parts))


def _stand_in(name: str) -> Any:
    """What the global `name` loads as, or None when it must be refused."""
    if name in _PLAIN_TYPES:
        return _PLAIN_TYPES[name]
    if name == "collections.defaultdict":
        return _empty_dict
    if name in ("pathlib.PosixPath", "pathlib.PurePosixPath"):
        return _posix_path
    if name in ("pathlib.WindowsPath", "pathlib.PureWindowsPath"):
        return _windows_path
    if name.startswith(_STAND_IN_PREFIXES) or name in _STAND_IN_NAMES:
        # dict subclasses must load as dicts: the unpickler fills only exact dicts with items
        return dict if name.endswith(".AttributeDict") else stand_in_class(name)
    return None


def _torch_judges(name: str) -> bool:
    return name.startswith("torch.") or name in _TORCH_OWN


# ---------------------------------------------------------------- torch.save files

def load_checkpoint(path: str | Path, keep: str | None = None) -> Any:
    """Read a `torch.save` file safely: tensors (memory-mapped for zip files) and plain data.

    `keep`: return only this entry of the file's dict (the whole file when it has no such entry);
    a legacy-format file then reads only the tensors under it from disk."""
    path = Path(path)
    kind = file_kind(path)
    if kind == "torchscript":
        raise CheckpointError(f"{path}: a TorchScript archive, not a checkpoint saved with torch.save; "
                              "only CLIP weights may come as TorchScript (register it as a perceptor `file:`)")
    if kind == "safetensors":
        raise CheckpointError(f"{path}: a safetensors file, not a checkpoint saved with torch.save")
    names = _legacy_globals(path) if kind == "legacy" else _zip_globals(path)
    refused = sorted(n for n in names if _stand_in(n) is None and not _torch_judges(n))
    if refused:
        _refuse(path, refused)
    if kind == "legacy" and keep:
        try:
            return _read_legacy(path, keep)
        except _NeedsTorch:
            pass  # torch's own reader below handles it
        except UnsafeCheckpointError:
            raise
        except Exception as err:
            raise _unreadable(path, err) from None
    stand_ins = [(_stand_in(n), n) for n in names if _stand_in(n) is not None]
    try:
        with torch.serialization.safe_globals(stand_ins):
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=kind == "zip")
    except pickle.UnpicklingError as err:  # a global or opcode torch's unpickler does not allow
        detail = str(err).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        raise UnsafeCheckpointError(f"{path}: refused to load: {detail}. Nothing from the file was run; "
                                    "get the checkpoint from a trusted source") from None
    except Exception as err:  # truncated, corrupt, or malformed by hand: all mean "unreadable"
        raise _unreadable(path, err) from None
    return plain(loaded[keep] if keep and isinstance(loaded, dict) and keep in loaded else loaded)


def _unreadable(path: Path, err: Exception) -> CheckpointError:
    detail = str(err).splitlines()[0] if str(err) else "no detail"
    return CheckpointError(f"{path}: not a readable torch checkpoint ({type(err).__name__}: {detail}); "
                           "delete it and download it again")


def _refuse(path: Path, names: list[str]) -> None:
    shown = sorted({_global_name(*n.rsplit(".", 1)) for n in names})  # torch leaves some Python 2 names
    raise UnsafeCheckpointError(
        f"{path}: refused to load: its pickle calls {', '.join(shown)}, which is code, not data "
        "(a checkpoint needs only tensors and plain values). Nothing from the file was run; "
        "do not use it, and get the checkpoint from a trusted source")


def _zip_globals(path: Path) -> list[str]:
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as err:
        raise _unreadable(path, err) from None


def _legacy_globals(path: Path) -> list[str]:
    """Every global named in a legacy-format file's pickles (magic, protocol, sys info, data)."""
    names: set[str] = set()
    try:
        with regular_file(path) as f:
            for _ in range(4):
                for op, arg, _pos in pickletools.genops(f):
                    if op.name in ("GLOBAL", "INST"):
                        names.add(_global_name(*arg.split(" ", 1)))
    except Exception as err:
        raise _unreadable(path, err) from None
    return sorted(names)


def _global_name(module: str, name: str) -> str:
    """`module.name` with Python 2 names (protocol 2 pickles) mapped as the unpickler maps them."""
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    return f"{IMPORT_MAPPING.get(module, module)}.{name}"


def plain(obj: Any, _path: frozenset[int] = frozenset()) -> Any:
    """`obj` with stand-ins turned into plain data: OmegaConf containers and nodes into their
    values, other objects into a dict of their state, bare class references into their names."""
    if isinstance(obj, type) and issubclass(obj, StandIn):
        return obj.global_name
    if isinstance(obj, (torch.Tensor, str, bytes, int, float, bool, type(None))) or id(obj) in _path:
        return obj
    inner = _path | {id(obj)}
    if isinstance(obj, StandIn):
        state = obj.state
        if isinstance(state, dict):
            for field in ("_content", "_val"):  # OmegaConf containers and value nodes
                if field in state:
                    return plain(state[field], inner)
            return {k: plain(v, inner) for k, v in state.items()}
        return obj.global_name
    if isinstance(obj, dict):
        items = ((plain(k, inner), plain(v, inner)) for k, v in obj.items())
        return OrderedDict(items) if isinstance(obj, OrderedDict) else dict(items)
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v, inner) for v in obj)
    return obj


def preview_keys(keys: list[str], n: int = 8) -> str:
    """The first `n` of a list of state-dict keys, and how many there are in all."""
    shown = ", ".join(keys[:n])
    return f"[{shown}{f', ... ({len(keys)} in all)' if len(keys) > n else ''}]"


# ---------------------------------------------------------------- any weights file

def file_kind(path: Path) -> str:
    """`zip`, `legacy`, `torchscript` or `safetensors`; CheckpointError for anything else."""
    try:
        with regular_file(path) as f:
            head = f.read(16)
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return "torchscript" if any(n.endswith("/constants.pkl") for n in archive.namelist()) else "zip"
    except (OSError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path}: cannot read the file ({err})") from None
    if head[:1] == b"\x80":
        return "legacy"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "safetensors"
    what = ("an HTML page (a dead link's error page?)" if head.lstrip().lower().startswith((b"<!doctype", b"<html"))
            else f"it starts with {head!r}")
    raise CheckpointError(f"{path}: not a checkpoint or weights file: {what}; delete it and get the real file")


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat name → tensor dict from any weights file: a torch.save state dict (bare, under
    `state_dict`, or with a `module.` prefix), a safetensors file, or a TorchScript archive."""
    path = Path(path)
    kind = file_kind(path)
    if kind == "torchscript":
        state = read_torchscript_tensors(path)
    elif kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            state = load_file(path)
        except (SafetensorError, OSError) as err:
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None
    else:
        loaded = load_checkpoint(path)
        state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: holds no state dict of tensors (bare or under 'state_dict')")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


# ---------------------------------------------------------------- TorchScript archives

_STORAGE_DTYPES = {f"torch.{name}Storage": dtype for name, dtype in (
    ("Float", torch.float32), ("Half", torch.float16), ("BFloat16", torch.bfloat16), ("Double", torch.float64),
    ("Long", torch.int64), ("Int", torch.int32), ("Short", torch.int16), ("Char", torch.int8),
    ("Byte", torch.uint8), ("Bool", torch.bool))}


def _rebuild_tensor(storage: torch.Tensor, offset: int, size: tuple, stride: tuple, *_rest: Any) -> torch.Tensor:
    return storage.as_strided(size, stride, offset)


def _same(value: Any, *_rest: Any) -> Any:
    """TorchScript's list builders and type tags: the value itself."""
    return value


_DATA_GLOBALS = {"torch._utils._rebuild_tensor_v2": _rebuild_tensor, "collections.OrderedDict": OrderedDict,
                 **_STORAGE_DTYPES,
                 **{f"torch.jit._pickle.{f}": _same for f in ("build_intlist", "build_doublelist", "build_boollist",
                                                             "build_tensorlist", "restore_type_tag")}}


class _NeedsTorch(Exception):
    """A legacy file this reader leaves to torch (a global torch judges, storage views, big endian)."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles data only: tensors rebuilt by our own functions, stand-ins, plain types; any other
    global is refused (`UnsafeCheckpointError`), so nothing in the file can run."""

    def __init__(self, file: Any, path: Path):
        super().__init__(file)
        self.path = path
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        full = _global_name(module, name)
        if full in _DATA_GLOBALS:
            return _DATA_GLOBALS[full]
        stand_in = self.stand_in(full)
        if stand_in is None:
            _refuse(self.path, [full])
        return stand_in

    def stand_in(self, name: str) -> Any:
        return _stand_in(name)


class _ScriptUnpickler(_RestrictedUnpickler):
    """A TorchScript archive's `data.pkl`: modules become stand-ins (their code is never compiled),
    tensors are read from the archive's records."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, path: Path):
        super().__init__(io.BytesIO(archive.read(f"{prefix}data.pkl")), path)
        self.archive, self.prefix = archive, prefix

    def stand_in(self, name: str) -> Any:
        return stand_in_class(name) if name.startswith("__torch__.") else None

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"
                and isinstance(pid[1], torch.dtype) and isinstance(pid[2], str)):
            raise pickle.UnpicklingError(f"unexpected record reference {pid!r:.80}")
        dtype, key = pid[1], pid[2]
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            self.storages[key] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        return self.storages[key]


class _LegacyUnpickler(_RestrictedUnpickler):
    """A legacy-format pickle whose storages are allocated but not read yet (see `_read_legacy`)."""

    def stand_in(self, name: str) -> Any:
        if _torch_judges(name):
            raise _NeedsTorch(name)
        return _stand_in(name)

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)
                and isinstance(pid[2], str) and isinstance(pid[4], int) and pid[5] is None):
            raise _NeedsTorch(f"record reference {pid!r:.80}")
        dtype, key, numel = pid[1], pid[2], pid[4]
        if key not in self.storages:
            self.storages[key] = torch.empty(numel, dtype=dtype)  # no page is touched until read
        return self.storages[key]


def _read_legacy(path: Path, keep: str) -> Any:
    """`torch.load(path)[keep]` of a legacy-format file, reading from disk only the storages of the
    tensors under `keep`: the rest (optimizer states) is skipped over, never read into memory."""
    with regular_file(path) as f:
        header = [_RestrictedUnpickler(f, path).load() for _ in range(3)]  # magic, protocol, sys info
        if not (isinstance(header[2], dict) and header[2].get("little_endian")):
            raise _NeedsTorch("not a little-endian file")
        reader = _LegacyUnpickler(f, path)
        loaded = reader.load()
        order = _RestrictedUnpickler(f, path).load()
        part = plain(loaded[keep] if isinstance(loaded, dict) and keep in loaded else loaded)
        wanted = {t.untyped_storage().data_ptr() for t in _tensors(part)}
        for key in order:
            storage = reader.storages[key]
            nbytes = int.from_bytes(f.read(8), "little") * storage.element_size()
            if storage.numel() and storage.untyped_storage().data_ptr() in wanted:
                if f.readinto(storage.view(torch.uint8).numpy()) != nbytes:
                    raise EOFError("the file ends inside a tensor")
            else:
                f.seek(nbytes, io.SEEK_CUR)
    return part


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


def read_torchscript_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a TorchScript archive's module tree, by dotted attribute path
    (`visual.conv1.weight`, ...), read without compiling or running any of its code."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            data = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if not data:
                raise CheckpointError(f"{path}: TorchScript archive without data.pkl")
            root = _ScriptUnpickler(archive, data[0][:-len("data.pkl")], path).load()
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable TorchScript archive ({type(err).__name__}: {err})") from None
    tensors: dict[str, torch.Tensor] = {}
    _collect(root, "", tensors, set())
    return tensors


def _collect(obj: Any, prefix: str, out: dict[str, torch.Tensor], seen: set[int]) -> None:
    if not isinstance(obj, StandIn) or not isinstance(obj.state, dict) or id(obj) in seen:
        return
    seen.add(id(obj))
    for name, value in obj.state.items():
        if isinstance(value, torch.Tensor):
            out[f"{prefix}{name}"] = value
        else:
            _collect(value, f"{prefix}{name}.", out, seen)
