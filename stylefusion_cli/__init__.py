"""The two command-line interfaces, `stylefusion` (iterative) and `fast-style-transfer` (feed-forward).

Kept out of the `stylefusion` library package: this is the one place that prints and exits. From a clone the
top-level stylefusion.py and fast_style_transfer.py run these modules; installed, the console commands do.
"""

import os as _os
import sys as _sys


def _require_current_folder() -> None:
    """Stop with one line where the current folder has been deleted: importing torch would fail there with oneMKL's
    "FATAL ERROR: Cannot load libtorch_cpu.so", which reads like a broken install (even --help and --version)."""
    try:
        _os.getcwd()
    except FileNotFoundError:
        if _sys.stderr is not None:  # None where stderr is closed
            _sys.stderr.write("error: the current folder no longer exists (deleted while this shell was in it): cd "
                              "to another folder and run again\n")
        raise SystemExit(1) from None


_require_current_folder()  # before any submodule imports torch
