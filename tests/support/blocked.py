"""Run Python with some modules made unimportable, to prove a process never needs them.

    python -I tests/support/blocked.py flask,app,services -m genclient.cli sign --key K --job-id J
    python -I tests/support/blocked.py flask -c "import genclient"

Importing a blocked module (or any submodule of one) raises ModuleNotFoundError, as if it were not
installed. Every refused attempt is also listed on stderr at exit after ``BLOCKED IMPORTS:``, so an
import that the code under test catches and survives still shows. Run with ``-I`` so that neither
the current directory nor this folder lands on sys.path; the project is found through its
installation (``make install``).
"""
from __future__ import annotations

import atexit
import runpy
import sys
from importlib.abc import MetaPathFinder

MARKER = "BLOCKED IMPORTS:"


class Refuse(MetaPathFinder):
    def __init__(self, names: set[str]):
        self.names = names
        self.refused: list[str] = []

    def find_spec(self, fullname, path, target=None):
        parts = fullname.split(".")
        if any(".".join(parts[:i]) in self.names for i in range(1, len(parts) + 1)):
            self.refused.append(fullname)
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked for this test)", name=fullname)
        return None

    def report(self) -> None:
        if self.refused:
            print(f"{MARKER} {' '.join(sorted(set(self.refused)))}", file=sys.stderr, flush=True)


def main() -> None:
    names, mode, target, *rest = sys.argv[1:]
    refuse = Refuse({name for name in names.split(",") if name})
    already = sorted(name for name in sys.modules if refuse.names & {name, name.split(".")[0]})
    if already:
        sys.exit(f"already imported before blocking: {already}")
    sys.meta_path.insert(0, refuse)
    atexit.register(refuse.report)
    if mode == "-m":
        sys.argv = [target, *rest]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    elif mode == "-c":
        sys.argv = ["-c", *rest]
        exec(compile(target, "<blocked -c>", "exec"), {"__name__": "__main__"})
    else:
        sys.exit("usage: blocked.py NAME[,NAME...] (-m MODULE | -c CODE) [ARG...]")


if __name__ == "__main__":
    main()
