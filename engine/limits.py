"""The sizes a run may have, shared by the engine's settings (which refuse more) and the run-folder
readers (which read no more). Torch-free; imports nothing of the engine."""

MAX_STEPS = 1_000_000  # a run's steps (the study's: 2 000)
MAX_FRAMES = 20_000  # frames of one run: the engine saves no more, a reader lists no more
MAX_FRAME_PIXELS = 4096 * 4096  # a frame's width × height: the engine makes no larger, a reader decodes no larger
MAX_CUTOUTS = 4096  # cutouts per perceptor and step (pytti's default: 40)
MAX_LEARNING_RATE = 1000.0  # pytti's default is 0.1; far larger steps overflow the latent
