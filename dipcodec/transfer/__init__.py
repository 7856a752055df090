"""Transfer learning beside the core codec: shared base models and sequences of frames.

``basefile`` reads and writes base models (the decoder needs it) and ``meta`` trains them.
``sequence`` is the ``.dips`` container of a clip and decodes it (the decoder's side);
``warmstart`` encodes one, each frame fitted from the frames before it and its weights coded as
deltas from their decoded ones, and ``motion`` finds the canvas offset that lets a frame's start
follow the camera.
"""

__all__: list[str] = []
