"""Tiny test runner for the MicroPython unix port (no unittest/pytest there): imports one
test module, runs its test_* functions, prints PASS/FAIL per test, exits 1 on any failure.

Usage, from any working directory (files a test writes land there):
    micropython -X heapsize=128K tests/firmware/mp/runner.py test_window
"""
import sys


def _add_paths():
    # The unix port puts the script's own (absolute) folder first on sys.path; the
    # firmware folder is three levels up. Appended, so a MICROPYPATH set by the caller
    # (tests/firmware/test_micropython_units.py) takes precedence.
    here = sys.path[0]
    firmware = here.rsplit("/", 3)[0] + "/firmware"
    for p in (here, firmware):
        if p not in sys.path:
            sys.path.append(p)


def run(module_name):
    """Returns the number of failed tests (a module without tests counts as failed)."""
    try:
        mod = __import__(module_name)
    except Exception as e:
        print("FAIL %s (import): %r" % (module_name, e))
        sys.print_exception(e, sys.stderr)
        return 1
    # dir() order is a hash order on MicroPython; sort so runs are reproducible.
    names = sorted(n for n in dir(mod) if n.startswith("test_") and callable(getattr(mod, n)))
    if not names:
        # A module that silently runs nothing must not look green.
        print("FAIL %s: no test_ functions found" % module_name)
        return 1
    failed = 0
    for name in names:
        try:
            getattr(mod, name)()
        except Exception as e:
            failed += 1
            print("FAIL %s: %r" % (name, e))
            # Full traceback on stderr keeps stdout to one line per test.
            sys.print_exception(e, sys.stderr)
        else:
            print("PASS %s" % name)
    return failed


def main():
    if len(sys.argv) != 2:
        print("usage: micropython runner.py <test_module>")
        sys.exit(2)
    _add_paths()
    name = sys.argv[1]
    if name.endswith(".py"):
        name = name[:-3]
    sys.exit(1 if run(name) else 0)


main()
