"""Neutral calibration: the user's own neutral face, recorded from a few seconds of a stream.

    calib = NeutralCalibration()
    calib.start()                         # waits for the first frame, then records for 3 s
    calib.add(embedding_or_None, now)     # per frame: the selected face's embedding [d]
    calib.message                         # what is happening, for the user
    calib.reference                       # then: a reference.Reference (None before)

The reference is f_n, the renormalised mean of the recorded face embeddings, with their spread;
``scoring.score`` reads a face relative to it (the paper's emotional-to-neutral direction with its
learnt neutral G(f) replaced by this measured one).
"""
from __future__ import annotations

import numpy as np

from .reference import Reference

IDLE, WAITING, RECORDING, DONE, FAILED = "idle", "waiting", "recording", "done", "failed"


class NeutralCalibration:
    """The states: idle -> waiting (no frame yet) -> recording (n of MIN_FRAMES frames with a
    face) -> done (``reference``) or failed (too few frames with a face; a previous reference is kept)."""

    SECONDS = 3.0
    MIN_FRAMES = 5

    def __init__(self):
        self.state = IDLE
        self.started = None   # time of the first frame of this recording
        self.last = None      # time of the latest frame
        self.frames = []      # embeddings [d] of the frames with a face
        self.seen = 0         # frames seen while recording, with or without a face
        self.reference = None   # a previous recording's stays until a new one succeeds

    @property
    def recording(self) -> bool:
        return self.state in (WAITING, RECORDING)

    def start(self) -> None:
        """Begin a recording; its 3 s start with the first frame that arrives."""
        self.state, self.started, self.last, self.frames, self.seen = WAITING, None, None, [], 0

    def add(self, embedding, now: float) -> None:
        """Feed one frame: the selected face's embedding [d], or None when the frame has no face."""
        if not self.recording:
            return
        if self.started is None:
            self.state, self.started = RECORDING, now
        self.last, self.seen = now, self.seen + 1
        if embedding is not None:
            self.frames.append(np.asarray(embedding, np.float32))
        if now - self.started >= self.SECONDS:
            self._finish()

    def _finish(self) -> None:
        if len(self.frames) < self.MIN_FRAMES:
            self.state = FAILED
            return
        self.reference = Reference.from_embeddings(np.stack(self.frames))
        self.state = DONE

    @property
    def message(self) -> str:
        """One line for the user saying what the calibration is doing or did ('' while idle)."""
        n = len(self.frames)
        if self.state == WAITING:
            return ("Waiting for webcam frames: start the webcam (its Record button) to record your "
                    "neutral face.")
        if self.state == RECORDING:
            left = max(0.0, self.SECONDS - (self.last - self.started))
            return (f"Recording your neutral face: {n}/{self.MIN_FRAMES} frames with a face, "
                    f"{left:.1f} s left. Hold still.")
        if self.state == DONE:
            return (f"Neutral face recorded from {n} frames (spread {self.reference.spread:.3f}): faces are now "
                    f"read relative to it.")
        if self.state == FAILED:
            return (f"Calibration failed: a face was found in only {n} of {self.seen} frames "
                    f"({self.MIN_FRAMES} needed). Keep your face in view and record again.")
        return ""
