"""The layering rules of ../shared/ARCHITECTURE.md, enforced by scanning the source.

Pure code (crypto, the ledger types and verification, the protocol cores, the simulator) must not
do I/O, use threads or an event loop, read a clock, or use the module-level ``random`` functions.
A few modules in pure packages do I/O by design; they are listed in ``IO_MODULES`` with the reason.
Add a package to ``PURE_PACKAGES`` when it is created; the test fails if a listed package is
missing, so the list cannot silently rot.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Packages whose every module is pure, except the ones in IO_MODULES.
PURE_PACKAGES = [
    "crypto",
    "ledger",
    "bft/core",
    "bft/pbft",
    "bft/hotstuff",
    "bft/raft",
    "bft/sim",
]
# Pure packages that do not exist yet; they move to PURE_PACKAGES when they do.
FUTURE_PURE_PACKAGES: list[str] = []
IO_MODULES = {
    "crypto/keyfiles.py": "reads and writes key and committee files",
    "ledger/store.py": "the on-disk ledger store",
    "ledger/durable.py": "durable file replacement for the store and the replica's files",
}

BANNED_MODULES = {
    "trio": "an event loop",
    "asyncio": "an event loop",
    "anyio": "an event loop",
    "socket": "sockets",
    "ssl": "sockets",
    "selectors": "sockets",
    "threading": "threads",
    "concurrent": "threads",
    "multiprocessing": "processes",
    "subprocess": "processes",
    "signal": "signals",
    "time": "a clock",
    "datetime": "a clock",
    "os": "files and the process environment",
    "io": "files",
    "pathlib": "files",
    "shutil": "files",
    "tempfile": "files",
    "sqlite3": "files",
    "fcntl": "files",
    "mmap": "files",
    "secrets": "unseeded randomness",
    "uuid": "unseeded randomness",
}
BANNED_BUILTINS = {"open": "files", "input": "the terminal", "print": "the terminal"}
# From the random module only the seedable class may be used.
RANDOM_ALLOWED = {"Random"}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def scan_source(source: str, path: str) -> list[Violation]:
    """Every layering violation in one module's source."""
    tree = ast.parse(source, filename=path)
    found: list[Violation] = []
    random_names: set[str] = set()

    def banned(module: str) -> str | None:
        top = module.split(".")[0]
        return BANNED_MODULES.get(top)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                reason = banned(alias.name)
                if reason:
                    found.append(Violation(path, node.lineno, f"imports {alias.name} ({reason})"))
                if alias.name == "random":
                    random_names.add(alias.asname or "random")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            reason = banned(node.module)
            if reason:
                found.append(Violation(path, node.lineno, f"imports from {node.module} ({reason})"))
            if node.module == "random":
                for alias in node.names:
                    if alias.name not in RANDOM_ALLOWED:
                        found.append(
                            Violation(
                                path,
                                node.lineno,
                                f"imports random.{alias.name} (module-level randomness)",
                            )
                        )
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            reason = BANNED_BUILTINS.get(node.func.id)
            if reason:
                found.append(Violation(path, node.lineno, f"calls {node.func.id}() ({reason})"))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in random_names
            and node.attr not in RANDOM_ALLOWED
        ):
            found.append(
                Violation(path, node.lineno, f"uses random.{node.attr} (module-level randomness)")
            )
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id
            in (
                "__import__",
                "exec",
                "eval",
            )
        ):
            found.append(Violation(path, node.lineno, f"calls {node.func.id}() (hides imports)"))
    return found


def pure_modules() -> list[Path]:
    modules = []
    for package in PURE_PACKAGES:
        directory = ROOT / package
        for path in sorted(directory.rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel not in IO_MODULES:
                modules.append(path)
    return modules


def test_listed_packages_exist() -> None:
    for package in PURE_PACKAGES:
        assert (ROOT / package / "__init__.py").is_file(), f"pure package {package} is missing"
    for rel in IO_MODULES:
        assert (ROOT / rel).is_file(), f"IO_MODULES lists {rel}, which does not exist"


def test_future_packages_are_listed_once_they_exist() -> None:
    arrived = [p for p in FUTURE_PURE_PACKAGES if (ROOT / p / "__init__.py").is_file()]
    assert not arrived, f"move {arrived} from FUTURE_PURE_PACKAGES to PURE_PACKAGES"


@pytest.mark.parametrize("path", pure_modules(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_pure_module(path: Path) -> None:
    rel = path.relative_to(ROOT).as_posix()
    violations = scan_source(path.read_text("utf-8"), rel)
    assert not violations, "\n".join(map(str, violations))


def test_no_core_imports_another_core() -> None:
    cores = ["pbft", "hotstuff", "raft"]
    for core in cores:
        directory = ROOT / "bft" / core
        if not directory.is_dir():
            continue
        for path in directory.rglob("*.py"):
            tree = ast.parse(path.read_text("utf-8"))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module] if node.level == 0 else []
                for name in names:
                    parts = name.split(".")
                    if len(parts) > 1 and parts[0] == "bft" and parts[1] in cores:
                        assert parts[1] == core, f"{path}: core {core} imports core {parts[1]}"


def test_pure_layers_do_not_import_upper_layers() -> None:
    # crypto is the bottom; ledger may import crypto; the pure bft packages import those and
    # bft.core (and the simulator the cores), never network or the runtime.
    allowed = {
        "crypto": {"crypto"},
        "ledger": {"crypto", "ledger"},
        "bft/core": {"crypto", "ledger", "bft"},
        "bft/pbft": {"crypto", "ledger", "bft"},
        "bft/hotstuff": {"crypto", "ledger", "bft"},
        "bft/raft": {"crypto", "ledger", "bft"},
        "bft/sim": {"crypto", "ledger", "bft"},
    }
    runtime = {"node", "client", "testbed", "cli", "protocols"}
    project = {"crypto", "ledger", "network", "bft", "bench", "tests"}
    for package, may in allowed.items():
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text("utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    top = node.module.split(".")[0]
                elif isinstance(node, ast.Import):
                    top = node.names[0].name.split(".")[0]
                else:
                    continue
                if top in project:
                    assert top in may, f"{path}: {package} imports {top}"
                if top == "bft" and isinstance(node, ast.ImportFrom) and node.module:
                    second = node.module.split(".")[1] if "." in node.module else ""
                    assert second not in runtime, f"{path}: {package} imports {node.module}"


# ---------------------------------------------------------------- the scanner catches violations


@pytest.mark.parametrize(
    "source",
    [
        "import trio",
        "import socket",
        "from asyncio import sleep",
        "import threading",
        "import time\nx = time.monotonic()",
        "from time import monotonic",
        "import random\nx = random.random()",
        "import random as r\nr.shuffle([])",
        "from random import choice",
        "data = open('f').read()",
        "import os.path",
        "from pathlib import Path",
        "import datetime",
        "__import__('socket')",
    ],
)
def test_scanner_flags(source: str) -> None:
    assert scan_source(source, "example.py"), f"not flagged: {source!r}"


@pytest.mark.parametrize(
    "source",
    [
        "import random\nrng = random.Random(7)",
        "from random import Random",
        "import hashlib",
        "from dataclasses import dataclass",
        "import nacl.signing",
    ],
)
def test_scanner_allows(source: str) -> None:
    assert not scan_source(source, "example.py")
