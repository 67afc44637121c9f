"""Lua scripts kept in `lua/*.lua`, loaded once, called with named keys and arguments.

A script opens by naming what it is given, as dramatiq's and arq's do:

    local lease = KEYS[1]
    local token = ARGV[1]

`LuaScript` reads those lines and maps a call's names onto the positions, so a caller writes
`script(keys={"lease": ...}, args={"token": ...})` and a missing or unknown name is an error at the call, not a
wrong key in Redis. What follows the named positions (a list of jobs, a transaction's keys) is passed as
`more_keys` and `more_args`. `prelude.lua` (the functions several scripts share) is put before every script.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import redis

LUA = Path(__file__).parent / "lua"
_NAMED = re.compile(r"^local (\w+) = (KEYS|ARGV)\[(\d+)\]", re.MULTILINE)


@cache
def _source(name: str) -> str:
    return (LUA / f"{name}.lua").read_text()


def _positions(text: str, table: str) -> list[str]:
    named = sorted((int(n), name) for name, t, n in _NAMED.findall(text) if t == table)
    if [n for n, _ in named] != list(range(1, len(named) + 1)):
        raise ValueError(f"{table} must be named 1, 2, 3... in order: {named}")
    return [name for _, name in named]


class LuaScript:
    """One script of lua/, registered on a client (sent by its SHA, loaded again if Redis lost it)."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        text = _source(name)
        self.name = name
        self.key_names = _positions(text, "KEYS")
        self.arg_names = _positions(text, "ARGV")
        self._script = client.register_script(_source("prelude") + "\n" + text)

    def __call__(
        self,
        keys: Mapping[str, str],
        args: Mapping[str, Any],
        more_keys: Sequence[str] = (),
        more_args: Sequence[Any] = (),
        client: Any = None,
    ) -> Any:
        """Run the script (on `client`, a pipeline, when given: its reply comes with the pipeline's)."""
        return self._script(
            keys=[*self._ordered(keys, self.key_names, "keys"), *more_keys],
            args=[*self._ordered(args, self.arg_names, "args"), *more_args],
            client=client,
        )

    def _ordered(self, given: Mapping[str, Any], names: list[str], what: str) -> list[Any]:
        if set(given) != set(names):
            missing, unknown = sorted(set(names) - set(given)), sorted(set(given) - set(names))
            raise TypeError(f"{self.name}.lua {what}: missing {missing}, unknown {unknown}")
        return [given[name] for name in names]


def scripts(client: redis.Redis, *names: str) -> dict[str, LuaScript]:
    """The named scripts of lua/, registered on `client`."""
    return {name: LuaScript(client, name) for name in names}
