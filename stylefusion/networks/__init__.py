"""The feed-forward networks (Johnson et al.'s standard one, the compact one, conditional instance norm for
several styles, Magenta's arbitrary-style network with its style predictor and weights reader), their faster
inference forms and their flat layer lists, and everything about their files: load and save, pytorch/examples'
released models, export to ONNX and TorchScript.

May import `core` only.
"""
