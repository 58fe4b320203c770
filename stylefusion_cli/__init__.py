"""The two command-line interfaces, `stylefusion` (iterative) and `fast-style-transfer` (feed-forward).

Kept out of the `stylefusion` library package: this is the one place that prints and exits. From a clone the
top-level stylefusion.py and fast_style_transfer.py run these modules; installed, the console commands do.
"""
