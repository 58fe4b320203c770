"""What every flavour uses: images and colour, the guided filter, masks, VGG-19 and its weight sources, the
losses, device and memory, errors, the safe weights-file reader, the loss log and its plot, distributed plumbing.

May import nothing else of the package: every other folder builds on this one.
"""
