"""The framing study: dataset crops put back into a frame and found again by MTCNN."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from kefer.lab.robustness import UPSCALE, as_frame

ROOT = Path(__file__).resolve().parents[1]


def test_a_crop_becomes_a_padded_upscaled_frame():
    crop = Image.fromarray(np.full((48, 48), 200, np.uint8))
    frame = as_frame(crop)
    side = 48 * UPSCALE
    assert frame.shape == (2 * side, 2 * side, 3)
    assert (frame[0, 0] == 128).all() and (frame[side, side] == 200).all()


def test_framing_study_on_real_ckplus_faces(ckplus_root, tmp_path):
    """Four real CK+ faces per class (3 classes): MTCNN finds every one, each framing is scored,
    and wider crops change what the model sees."""
    for name in ("happiness", "surprise", "neutral"):
        (tmp_path / "test" / name).mkdir(parents=True)
        for path in sorted((ckplus_root / name).iterdir())[:4]:
            shutil.copy(path, tmp_path / "test" / name / path.name)
    r = subprocess.run([sys.executable, "-m", "kefer", "lab", "robustness", "fast", "--dataset", "folder", "--data-root",
                        str(tmp_path), "--crop-scales", "1.0", "1.4", "--output", str(tmp_path / "s.json"),
                        "--plot", str(tmp_path / "s.png")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    framings = json.loads((tmp_path / "s.json").read_text())["framings"]
    assert list(framings) == ["dataset crops", "mtcnn x1", "mtcnn x1.4"]
    assert all(m["n"] == 12 for m in framings.values())
    assert framings["mtcnn x1"]["missed"] == 0
    assert (tmp_path / "s.png").stat().st_size > 10_000
