"""The protocols by name, for the simulator, the runtime and the CLI."""

from __future__ import annotations

import importlib

from bft.core.interface import ProtocolSpec

PROTOCOL_MODULES = {"pbft": "bft.pbft", "hotstuff": "bft.hotstuff", "raft": "bft.raft"}


def spec(name: str) -> ProtocolSpec:
    """The :class:`ProtocolSpec` of ``name``; ``ValueError`` for an unknown or missing one."""
    module_name = PROTOCOL_MODULES.get(name)
    if module_name is None:
        raise ValueError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOL_MODULES)}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise ValueError(f"protocol {name!r} is not available in this build") from None
        raise
    return module.SPEC


def available() -> list[str]:
    out = []
    for name in PROTOCOL_MODULES:
        try:
            spec(name)
        except ValueError:
            continue
        out.append(name)
    return out
