"""Where the local mesh is: the run file `gatemesh up` writes, the pointer to it, and the
search the read commands make.

`gatemesh up` writes `<data_dir>/run.json` (its pid, data directory, configuration file and
every address it binds) and a pointer to that data directory in
`$XDG_STATE_HOME/gatemesh/current.json` (default `~/.local/state/gatemesh`), unless it
points at another mesh that still runs, and removes both when it stops. An operator
command looks for the data directory in this order:
`--data-dir` / `GATEMESH_DATA_DIR`, `data_dir` in the configuration file, `./.gatemesh`,
then the pointer, so it finds the mesh from any working directory. It never creates
anything: a directory that holds no mesh state, or none found at all, is an error that
says where it looked and how to name the right one. The addresses in a live mesh's run
file are used for every address not given explicitly in the environment.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from services.runtime.settings import config_file

RUN_FILE = "run.json"
SECRETS_FILE = "secrets.json"
DEFAULT_DATA_DIR = Path(".gatemesh")
EXIT_NO_MESH = 4
ADDRESS_SETTINGS = ("auth_addr", "billing_addr", "proxy_addr", "privacy_addr", "edge_host", "edge_port")
HOW_TO_POINT = (
    "point the CLI at the mesh's data directory with --data-dir DIR or GATEMESH_DATA_DIR"
    " (or its configuration with --config FILE), or start one with `gatemesh up`"
)


class MeshNotFound(Exception):
    """No data directory of a mesh could be found, or the one named holds no mesh state."""


@dataclass
class RunInfo:
    """What `gatemesh up` wrote about the mesh it runs."""

    pid: int
    data_dir: str
    config: str = ""
    addresses: dict[str, str] = field(default_factory=dict)
    started_at: str = ""

    def alive(self) -> bool:
        """Whether the `gatemesh up` process that wrote this still runs."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process: it exists
            return True
        return True


@dataclass
class Located:
    """The data directory found, how it was found, and its run file if any."""

    data_dir: Path
    how: str
    run: RunInfo | None

    @property
    def live(self) -> bool:
        return self.run is not None and self.run.alive()


def state_dir() -> Path:
    """$XDG_STATE_HOME/gatemesh, by the XDG base-directory convention."""
    base = os.environ.get("XDG_STATE_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".local" / "state") / "gatemesh"


def pointer_path() -> Path:
    return state_dir() / "current.json"


def _write_json(path: Path, value: dict[str, Any]) -> None:
    """Write atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_run(data_dir: Path, addresses: dict[str, str]) -> tuple[RunInfo, RunInfo | None]:
    """Record this process as the mesh running from `data_dir`, and point at it unless the
    pointer names another mesh that still runs (returned): a second mesh (a benchmark, a
    test) never takes the CLI's default away from the one the operator started first."""
    config = config_file()
    info = RunInfo(
        pid=os.getpid(),
        data_dir=str(data_dir.resolve()),
        config=str(config.resolve()) if config else "",
        addresses=addresses,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _write_json(data_dir / RUN_FILE, asdict(info))
    current = _read_json(pointer_path()) or {}
    other = read_run(Path(current["data_dir"])) if current.get("data_dir") else None
    if other is not None and other.pid == current.get("pid") and other.pid != info.pid and other.alive():
        return info, other
    _write_json(pointer_path(), {"data_dir": info.data_dir, "pid": info.pid})
    return info, None


def remove_run(info: RunInfo) -> None:
    """Remove the run file and the pointer, where they are still this process's."""
    run_path = Path(info.data_dir) / RUN_FILE
    if (_read_json(run_path) or {}).get("pid") == info.pid:
        run_path.unlink(missing_ok=True)
    if (_read_json(pointer_path()) or {}).get("pid") == info.pid:
        pointer_path().unlink(missing_ok=True)


def read_run(data_dir: Path) -> RunInfo | None:
    raw = _read_json(data_dir / RUN_FILE)
    if raw is None:
        return None
    try:
        return RunInfo(**{k: raw[k] for k in ("pid", "data_dir", "config", "addresses", "started_at") if k in raw})
    except TypeError:
        return None


def _configured_data_dir() -> Path | None:
    """`data_dir` from the configuration file, if it names one (read, never created)."""
    path = config_file()
    if path is None or not path.is_file():
        return None
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return None
    value = loaded.get("data_dir") if isinstance(loaded, dict) else None
    return Path(value) if value else None


def named_data_dir() -> tuple[Path, str] | None:
    """The data directory the operator named (option, environment or configuration)."""
    named = os.environ.get("GATEMESH_DATA_DIR", "").strip()
    if named:
        return Path(named), "--data-dir / GATEMESH_DATA_DIR"
    configured = _configured_data_dir()
    return (configured, f"data_dir in {config_file()}") if configured is not None else None


def candidates() -> list[tuple[Path, str]]:
    """Where to look, in order, with how each place was named (for messages)."""
    named = named_data_dir()
    if named is not None:
        return [named]
    found = [(DEFAULT_DATA_DIR, "the working directory's .gatemesh")]
    pointer = _read_json(pointer_path())
    if pointer and pointer.get("data_dir"):
        found.append((Path(pointer["data_dir"]), f"the mesh `gatemesh up` last started ({pointer_path()})"))
    return found


def locate(secrets_configured: bool) -> Located:
    """The data directory the operator means; MeshNotFound with where it looked if none."""
    places = candidates()
    for data_dir, how in places:
        if (data_dir / SECRETS_FILE).is_file():
            return Located(data_dir, how, read_run(data_dir))
    if secrets_configured:  # every credential is configured: nothing is read from disk
        return Located(places[0][0], places[0][1], None)
    if named_data_dir() is not None:
        data_dir, how = places[0]
        state = "does not exist" if not data_dir.exists() else "holds no mesh state (no secrets.json)"
        raise MeshNotFound(f"the data directory {data_dir.absolute()} ({how}) {state}; {HOW_TO_POINT}")
    looked = ", ".join(f"{data_dir.absolute()} ({how})" for data_dir, how in places)
    raise MeshNotFound(f"no local mesh found (looked in {looked}); {HOW_TO_POINT}")


def apply(located: Located) -> None:
    """Make the located mesh what settings read: its data directory, and, while it runs,
    its configuration file and the addresses it bound (explicit settings still win)."""
    os.environ["GATEMESH_DATA_DIR"] = str(located.data_dir.resolve())
    if located.run is None or not located.live:
        return
    if located.run.config and not os.environ.get("GATEMESH_CONFIG"):
        os.environ["GATEMESH_CONFIG"] = located.run.config
    for setting, value in located.run.addresses.items():
        if setting in ADDRESS_SETTINGS:
            os.environ.setdefault(f"GATEMESH_{setting.upper()}", str(value))
