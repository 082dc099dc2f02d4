#!/usr/bin/env python3
"""Run Python on a PC as if only some OpenWrt python3-* packages were installed; size them.

OpenWrt splits the standard library into opkg packages (python3-packages.json, read from
openwrt/packages). Whether a package list is enough can be checked here, without a router:

    python3 -S opkg_python.py run --packages packages.txt --path LIB [--report F] -- -m footfall agent run ...

installs an import hook that refuses every standard-library module whose OpenWrt package is not
in packages.txt (or their dependencies), puts LIB (the unpacked sensor tarball) first on the path
and runs the module. ``-S`` keeps site-packages out. ``--report`` writes which package each
imported module came from. tests/test_openwrt.py runs the agent this way.

    python3 opkg_python.py footprint --packages packages.txt

adds up, per package, the bytes of its files under this Python (.pyc as OpenWrt ships them, and
the extension modules): a stand-in for the router's flash use, see README.md.

Standard library only, and only modules of python3-base/python3-light, so that the hook itself
does not pull in what it is meant to refuse.
"""

from __future__ import annotations

import fnmatch
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MAPPING = os.path.join(HERE, "python3-packages.json")
PACKAGES_TXT = os.path.join(HERE, "packages.txt")
LIGHT = "python3-light"
NOT_INSTALLED = "(not installed by any package)"


def load_mapping(path: str = MAPPING) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_packages(path: str = PACKAGES_TXT) -> list[str]:
    """The package names of a packages.txt: first word of each line, '#' starts a comment."""
    names = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            word = line.split("#", 1)[0].strip()
            if word:
                names.append(word.split()[0])
    return names


def closure(names: list[str], mapping: dict) -> set[str]:
    """The packages opkg installs for these names: them and their DEPENDS, transitively."""
    packages = mapping["packages"]
    todo, seen = list(names), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += packages.get(name, {}).get("depends", [])
    return seen


def _module_of(path: str) -> str:
    """A file list entry ("lib-dynload/_ssl.so", "uuid.py", "logging") as a module name."""
    if path.startswith("lib-dynload/"):
        return path[len("lib-dynload/") :].split(".", 1)[0]
    if path.endswith(".py"):
        path = path[:-3]
    return path.replace("/", ".")


class Owners:
    """Which OpenWrt package installs a given standard-library module."""

    def __init__(self, mapping: dict, stdlib_names: frozenset[str] | None = None) -> None:
        self.stdlib_names = stdlib_names if stdlib_names is not None else frozenset(sys.stdlib_module_names)
        self.exact: dict[str, str] = {}
        self.patterns: list[tuple[str, str]] = []
        for package, spec in mapping["packages"].items():
            if package == LIGHT:
                for path in spec.get("excludes", []):
                    self.exact[_module_of(path)] = NOT_INSTALLED
                continue
            for path in spec["files"]:
                name = _module_of(path)
                if "*" in name:
                    self.patterns.append((name, package))
                else:
                    self.exact[name] = package
        for name in mapping["not_built"]["modules"]:
            self.exact[name] = NOT_INSTALLED
        # python3-webbrowser re-adds what python3-light leaves out
        self.exact["webbrowser"] = "python3-webbrowser"

    def __call__(self, fullname: str) -> str | None:
        """The package, NOT_INSTALLED, or None for a module that is not in the standard library."""
        parts = fullname.split(".")
        known = (
            parts[0] in self.stdlib_names
            or parts[0] in self.exact
            or any(fnmatch.fnmatchcase(parts[0], p) for p, _ in self.patterns)
        )
        if not known:
            return None
        # --disable-test-modules: no package test suites (ctypes.test, unittest.test, ...)
        if any(p in ("test", "tests", "idle_test") for p in parts[1:]):
            return NOT_INSTALLED
        for i in range(len(parts), 0, -1):
            prefix = ".".join(parts[:i])
            if prefix in self.exact:
                return self.exact[prefix]
            for pattern, package in self.patterns:
                if fnmatch.fnmatchcase(prefix, pattern):
                    return package
        return LIGHT


class Blocker:
    """A sys.meta_path finder, first in line: refuses modules of packages that are not installed."""

    def __init__(self, owners: Owners, installed: set[str]) -> None:
        self.owners = owners
        self.installed = installed
        self.refused: dict[str, str] = {}

    def allowed(self, fullname: str) -> bool:
        owner = self.owners(fullname)
        return owner is None or owner in self.installed

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if not self.allowed(fullname):
            owner = self.owners(fullname)
            self.refused[fullname] = owner or ""
            raise ModuleNotFoundError(f"No module named {fullname!r} ({owner} is not installed)", name=fullname)
        return None  # let the normal finders find it


def install(packages_txt: str, lib: list[str], mapping_path: str = MAPPING) -> Blocker:
    """Make this interpreter look like a router with exactly these opkg packages."""
    mapping = load_mapping(mapping_path)
    blocker = Blocker(Owners(mapping), closure(read_packages(packages_txt), mapping))
    # Forget what was imported before the hook (Python's own start-up, this script): the agent
    # must import it again, through the hook. Those loaded at start-up are all python3-base.
    for name in [n for n in sys.modules if not blocker.allowed(n)]:
        del sys.modules[name]
    sys.meta_path.insert(0, blocker)
    stdlib = [p for p in sys.path if p and os.path.isdir(p) and not p.endswith(("site-packages", "dist-packages"))]
    sys.path[:] = [*lib, *[p for p in stdlib if p != HERE]]
    return blocker


def _report(blocker: Blocker, path: str) -> None:
    used: dict[str, list[str]] = {}
    for name in sorted(sys.modules):
        owner = blocker.owners(name)
        if owner is not None:
            used.setdefault(owner, []).append(name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"used": used, "refused": blocker.refused}, f, indent=1, sort_keys=True)


def cmd_run(argv: list[str]) -> int:
    import argparse
    import runpy

    parser = argparse.ArgumentParser(prog="opkg_python.py run")
    parser.add_argument("--packages", default=PACKAGES_TXT, help="packages.txt of the router")
    parser.add_argument("--path", action="append", default=[], help="prepend to sys.path (the tarball's lib)")
    parser.add_argument("--report", help="write the modules used, by package, to this JSON file at exit")
    parser.add_argument("-m", dest="module", required=True, help="module to run as __main__")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args(argv)
    if not sys.flags.no_site:
        parser.error("run me with python3 -S: site-packages would hide what is missing")
    blocker = install(opts.packages, opts.path)
    args = opts.args[1:] if opts.args[:1] == ["--"] else opts.args
    sys.argv = [opts.module, *args]
    try:
        runpy.run_module(opts.module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    finally:
        if opts.report:
            _report(blocker, opts.report)
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1


def _pyc_size(path: str) -> int:
    import marshal
    import warnings

    with open(path, "rb") as f:
        source = f.read()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # compileall prints these on the build host, not on the router
            code = compile(source, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return 0  # a lib2to3 test fixture and the like: compileall skips it too
    return 16 + len(marshal.dumps(code))  # the 16-byte .pyc header


def footprint(names: list[str], mapping: dict) -> dict[str, dict[str, int]]:
    """Bytes each package's files take under this Python: .pyc (OpenWrt ships those) and .so."""
    import sysconfig

    stdlib = sysconfig.get_paths()["stdlib"]
    dynload = os.path.join(stdlib, "lib-dynload")
    owners = Owners(mapping)
    sizes = {name: {"pyc": 0, "so": 0, "files": 0} for name in names}

    def add(owner: str | None, kind: str, size: int) -> None:
        if owner in sizes:
            sizes[owner][kind] += size
            sizes[owner]["files"] += 1

    for root, dirs, files in os.walk(stdlib):
        dirs[:] = [d for d in dirs if d not in ("__pycache__", "site-packages", "dist-packages", "lib-dynload")]
        rel = os.path.relpath(root, stdlib)
        for f in files:
            if not f.endswith(".py"):
                continue
            parts = [] if rel == "." else rel.split(os.sep)
            stem = f[:-3]
            module = ".".join(parts + ([] if stem == "__init__" else [stem]))
            owner = owners(module) if module else None
            if owner in sizes:
                add(owner, "pyc", _pyc_size(os.path.join(root, f)))
    if os.path.isdir(dynload):
        for f in os.listdir(dynload):
            if f.endswith(".so"):
                add(owners(f.split(".", 1)[0]), "so", os.path.getsize(os.path.join(dynload, f)))
    return sizes


def cmd_footprint(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="opkg_python.py footprint")
    parser.add_argument("--packages", default=PACKAGES_TXT)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args(argv)
    mapping = load_mapping()
    names = sorted(n for n in closure(read_packages(opts.packages), mapping) if n.startswith("python3-"))
    sizes = footprint(names, mapping)
    if opts.json:
        print(json.dumps(sizes, indent=1, sort_keys=True))
        return 0
    print(f"Python {sys.version.split()[0]} on {sys.platform}, {sys.implementation.cache_tag}")
    print(f"{'package':<20} {'files':>6} {'.pyc KB':>8} {'.so KB':>8} {'total KB':>9}")
    total = 0
    for name, s in sizes.items():
        kb = (s["pyc"] + s["so"]) // 1024
        total += s["pyc"] + s["so"]
        print(f"{name:<20} {s['files']:>6} {s['pyc'] // 1024:>8} {s['so'] // 1024:>8} {kb:>9}")
    print(f"{'total':<20} {'':>6} {'':>8} {'':>8} {total // 1024:>9}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"run": cmd_run, "footprint": cmd_footprint}
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
