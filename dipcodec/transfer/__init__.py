"""Transfer learning beside the core codec: shared base models and sequences of frames.

``basefile`` reads and writes base models (the decoder needs it); ``meta`` trains them and
``sequence`` codes clips, each frame's weights as deltas from the previous frame's.
"""

__all__: list[str] = []
