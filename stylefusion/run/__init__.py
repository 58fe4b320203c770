"""Running a network on real inputs: folders of images in batches, exact tiles for any size, strength and
masks, video with its audio and a flicker score, and the webcam.

May import `core` and `networks`.
"""
