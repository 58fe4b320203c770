"""Training a feed-forward network (Johnson et al. 2016): the loop, checkpoints that resume bit for bit, the
content-image dataset, and the stability term for video.

May import `core` and `networks`.
"""
