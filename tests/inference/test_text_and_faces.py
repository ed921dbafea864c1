"""The opt-in `text` (RapidOCR) and `faces` (Haar cascade) components on real and drawn images."""

from __future__ import annotations

import importlib.metadata
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime
import pytest
import skimage.data
from PIL import Image, ImageDraw, ImageFont
from sklearn.datasets import load_sample_image

from dupify.inference.assets import AssetError
from dupify.inference.models.faces import CASCADE, Face, FaceDetector
from dupify.inference.models.text import MODELS, TextLine, TextReader, verify_models
from dupify.inference.session import SessionPolicy

Pixels = npt.NDArray[np.uint8]

# Eileen Collins' face in scikit-image's 512x512 `astronaut`, [x, y, w, h], read off the photo.
ASTRONAUT_FACE = (175, 65, 95, 100)


@pytest.fixture(scope="session")
def text_reader() -> TextReader:
    return TextReader(SessionPolicy(intra_op_threads=0))


@pytest.fixture(scope="session")
def face_detector() -> FaceDetector:
    return FaceDetector(SessionPolicy(intra_op_threads=0))


def truetype_font(size: int) -> ImageFont.FreeTypeFont:
    """A TrueType font from the system, else the one Pillow bundles (FreeType since 10.1)."""
    fonts = sorted(Path("/usr/share/fonts").rglob("DejaVuSans*.ttf")) or sorted(
        Path("/usr/share/fonts").rglob("*.ttf")
    )
    if fonts:
        return ImageFont.truetype(str(fonts[0]), size)
    bundled = ImageFont.load_default(size=size)
    assert isinstance(bundled, ImageFont.FreeTypeFont)
    return bundled


def draw_words(
    canvas: Image.Image, words: list[tuple[str, tuple[int, int], int]]
) -> tuple[Pixels, list[tuple[int, int, int, int]]]:
    """Draw each (word, top-left, size) in black; returns the pixels and each word's bbox."""
    draw = ImageDraw.Draw(canvas)
    boxes = []
    for word, origin, size in words:
        font = truetype_font(size)
        draw.text(origin, word, font=font, fill="black")
        left, top, right, bottom = draw.textbbox(origin, word, font=font)
        boxes.append((int(left), int(top), int(right), int(bottom)))
    return np.asarray(canvas.convert("RGB")), boxes


def normalised(text: str) -> str:
    return "".join(text.split()).upper()


def box_bounds(box: list[list[int]]) -> tuple[int, int, int, int]:
    xs = [x for x, _ in box]
    ys = [y for _, y in box]
    return min(xs), min(ys), max(xs), max(ys)


def covers(outer: tuple[int, int, int, int], inner: tuple[int, int, int, int], slack: int) -> bool:
    return (
        outer[0] <= inner[0] + slack
        and outer[1] <= inner[1] + slack
        and outer[2] >= inner[2] - slack
        and outer[3] >= inner[3] - slack
    )


def iou(a: tuple[int, ...] | list[int], b: tuple[int, ...] | list[int]) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    inter_w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    inter_h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = inter_w * inter_h
    return inter / (aw * ah + bw * bh - inter)


def rgb(image: Any) -> Pixels:
    if isinstance(image, tuple):  # stereo_motorcycle returns (left, right, disparity)
        image = image[0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


# --- text ---------------------------------------------------------------------------------


def test_reads_words_drawn_in_a_truetype_font_top_to_bottom(text_reader: TextReader) -> None:
    # Drawn bottom word first, so the order of the result comes from the reader, not the drawing.
    pixels, (sale_box, dupify_box) = draw_words(
        Image.new("RGB", (640, 360), "white"),
        [("SALE", (80, 220), 64), ("DUPIFY", (80, 60), 72)],
    )

    lines = text_reader.read(pixels)

    assert [normalised(line["text"]) for line in lines] == ["DUPIFY", "SALE"]
    for line, drawn in zip(lines, (dupify_box, sale_box), strict=True):
        assert line["confidence"] > 0.8
        assert len(line["box"]) == 4
        assert covers(box_bounds(line["box"]), drawn, slack=6), (line["box"], drawn)


def test_boxes_are_reported_in_the_original_image_coordinates(text_reader: TextReader) -> None:
    pixels, _ = draw_words(Image.new("RGB", (640, 360), "white"), [("DUPIFY", (80, 60), 72)])

    as_given = text_reader.read(pixels)
    as_original = text_reader.read(pixels, original_size=(1280, 720))

    assert [line["text"] for line in as_original] == [line["text"] for line in as_given]
    doubled = np.asarray(as_given[0]["box"]) * 2
    assert np.abs(np.asarray(as_original[0]["box"]) - doubled).max() <= 2


def test_reads_small_print_in_a_photo_at_the_working_side(text_reader: TextReader) -> None:
    photo = cv2.resize(skimage.data.coffee(), (1365, 1024), interpolation=cv2.INTER_CUBIC)
    canvas = Image.fromarray(photo)
    ImageDraw.Draw(canvas).rectangle((40, 40, 320, 72), fill="white")
    pixels, _ = draw_words(canvas, [("OPEN 24 HOURS", (45, 45), 12)])

    texts = [normalised(line["text"]) for line in text_reader.read(pixels)]

    assert "OPEN24HOURS" in texts


def test_reads_a_long_thin_banner(text_reader: TextReader) -> None:
    pixels, _ = draw_words(Image.new("RGB", (3000, 70), "white"), [("WIDE BANNER", (40, 5), 48)])

    texts = [normalised(line["text"]) for line in text_reader.read(pixels)]

    assert texts == ["WIDEBANNER"]


def test_no_text_on_a_plain_gradient_or_a_photo_without_text(text_reader: TextReader) -> None:
    ramp = np.linspace(0, 255, 640, dtype=np.uint8)
    gradient = np.ascontiguousarray(np.broadcast_to(ramp[None, :, None], (360, 640, 3)))

    assert text_reader.read(gradient) == []
    assert text_reader.read(rgb(skimage.data.coffee())) == []


def test_extreme_shapes_stay_cheap_and_return_nothing(text_reader: TextReader) -> None:
    # Without the cap, RapidOCR would scale this strip's 20-pixel side up to 736 (442 MP).
    strip = np.full((20, 12000, 3), 255, dtype=np.uint8)
    tiny = np.full((3, 3, 3), 255, dtype=np.uint8)

    assert text_reader.read(strip) == []
    assert text_reader.read(tiny) == []


def test_rejects_pixels_that_are_not_rgb(text_reader: TextReader) -> None:
    with pytest.raises(ValueError, match="RGB"):
        text_reader.read(np.zeros((64, 64), dtype=np.uint8))
    with pytest.raises(ValueError, match="RGB"):
        text_reader.read(np.zeros((64, 64, 3), dtype=np.float32))  # type: ignore[arg-type]


def test_models_are_the_pinned_files_inside_the_package() -> None:
    model_dir = MODELS[0].locate().parent

    paths = verify_models()

    assert [path.name for path in paths] == [Path(asset.path).name for asset in MODELS]
    assert len({asset.sha256 for asset in MODELS}) == 3
    assert all(path.parent == model_dir and path.is_file() for path in paths)
    assert verify_models(model_dir) == paths


def test_an_altered_model_file_is_refused(tmp_path: Path) -> None:
    for path in verify_models():
        shutil.copyfile(path, tmp_path / path.name)
    altered = tmp_path / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    data = bytearray(altered.read_bytes())
    data[-1] ^= 0xFF
    altered.write_bytes(bytes(data))

    with pytest.raises(AssetError, match="sha256"):
        verify_models(tmp_path)


def test_an_altered_face_cascade_is_refused(tmp_path: Path) -> None:
    altered = tmp_path / "cascade.xml"
    altered.write_bytes(CASCADE.locate().read_bytes() + b" ")
    with pytest.raises(AssetError, match="sha256"):
        CASCADE.read(altered)


def test_ocr_and_faces_take_threads_and_device_from_the_session_policy() -> None:
    policy = SessionPolicy(device="cpu", intra_op_threads=1)
    assert TextReader(policy).intra_op_threads == 1
    assert FaceDetector(policy).threads == 1
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(RuntimeError, match="onnxruntime-gpu"):
            TextReader(SessionPolicy(device="cuda"))


def test_only_the_headless_opencv_is_installed() -> None:
    # The GUI build needs libGL and installs the same `cv2` module: both present would clash.
    assert importlib.metadata.version("opencv-python-headless")
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("opencv-python")


class EventRecorder:
    """A process-wide audit hook (hooks cannot be removed) recording file writes and sockets."""

    def __init__(self) -> None:
        self.active = False
        self.events: list[tuple[str, tuple[Any, ...]]] = []
        self._lock = threading.Lock()
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active:
            return
        if event in ("socket.connect", "socket.getaddrinfo", "tempfile.mkstemp", "os.mkdir"):
            with self._lock:
                self.events.append((event, args))
        elif event == "open":
            path, mode = (*args, None, None)[:2]
            # Reading the installed package's own files is fine, wherever the venv lives (a CI
            # checkout may sit under the temp directory).
            in_temp = (
                isinstance(path, str)
                and path.startswith(tempfile.gettempdir())
                and not path.startswith(sys.prefix)
            )
            writing = isinstance(mode, str) and any(flag in mode for flag in "wax+")
            if in_temp or writing:
                with self._lock:
                    self.events.append((event, args))

    @contextmanager
    def recording(self) -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
        self.events = []
        self.active = True
        try:
            yield self.events
        finally:
            self.active = False


def test_loads_and_reads_without_network_or_files_written() -> None:
    recorder = EventRecorder()
    pixels, _ = draw_words(Image.new("RGB", (640, 200), "white"), [("OFFLINE", (60, 50), 72)])
    # A control: the hook does see a socket being used and a file being written.
    with recorder.recording() as control:
        with socket.socket() as probe, pytest.raises(OSError):
            probe.connect(("127.0.0.1", 9))
        with tempfile.TemporaryFile():
            pass
    assert control

    with recorder.recording() as events:
        reader = TextReader(SessionPolicy(intra_op_threads=1))
        lines = reader.read(pixels)

    assert [normalised(line["text"]) for line in lines] == ["OFFLINE"]
    assert events == []


def test_concurrent_reads_give_the_sequential_answers(text_reader: TextReader) -> None:
    images = [
        draw_words(Image.new("RGB", (480, 200), "white"), [(word, (40, 50), 64)])[0]
        for word in ("ALPHA", "BRAVO", "DELTA", "ECHO")
    ]
    sequential = [text_reader.read(image) for image in images]

    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent: list[list[TextLine]] = list(pool.map(text_reader.read, images))

    assert concurrent == sequential
    assert [normalised(lines[0]["text"]) for lines in sequential] == [
        "ALPHA",
        "BRAVO",
        "DELTA",
        "ECHO",
    ]


# --- faces --------------------------------------------------------------------------------


def test_finds_the_astronauts_face_and_only_a_box(face_detector: FaceDetector) -> None:
    faces = face_detector.detect(rgb(skimage.data.astronaut()))

    assert len(faces) == 1
    face = faces[0]
    # Detection only: a box and a confidence, nothing that could describe or identify a face.
    assert set(face) == {"box", "confidence"}
    assert iou(face["box"], ASTRONAUT_FACE) > 0.6, face["box"]
    assert 0.9 < face["confidence"] < 1.0


@pytest.mark.parametrize("side", [256, 1024])
def test_finds_the_face_at_other_sizes_and_mirrored(face_detector: FaceDetector, side: int) -> None:
    photo = rgb(skimage.data.astronaut())
    resized = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
    mirrored = np.ascontiguousarray(resized[:, ::-1])
    scale = side / 512
    expected = [round(value * scale) for value in ASTRONAUT_FACE]
    x, y, w, h = expected
    expected_mirrored = [side - x - w, y, w, h]

    for pixels, target in ((resized, expected), (mirrored, expected_mirrored)):
        faces = face_detector.detect(pixels)
        assert len(faces) == 1
        assert iou(faces[0]["box"], target) > 0.6, (faces[0]["box"], target)


def test_face_boxes_are_reported_in_the_original_image_coordinates(
    face_detector: FaceDetector,
) -> None:
    photo = rgb(skimage.data.astronaut())

    (face,) = face_detector.detect(photo, original_size=(1024, 2048))

    x, y, w, h = face_detector.detect(photo)[0]["box"]
    assert face["box"] == [2 * x, 4 * y, 2 * w, 4 * h]


def test_two_faces_side_by_side_are_two_faces(face_detector: FaceDetector) -> None:
    photo = rgb(skimage.data.astronaut())
    pair = np.ascontiguousarray(np.concatenate([photo, photo[:, ::-1]], axis=1))

    faces = face_detector.detect(pair)

    assert len(faces) == 2
    lefts = sorted(face["box"][0] for face in faces)
    assert lefts[0] < 512 <= lefts[1]


@pytest.mark.parametrize(
    "name",
    ["coffee", "chelsea", "coins", "rocket", "page", "brick", "retina", "stereo_motorcycle"],
)
def test_no_faces_in_photos_without_people(face_detector: FaceDetector, name: str) -> None:
    assert face_detector.detect(rgb(getattr(skimage.data, name)())) == []


@pytest.mark.parametrize("name", ["china.jpg", "flower.jpg"])
def test_no_faces_in_scikit_learns_photos(face_detector: FaceDetector, name: str) -> None:
    assert face_detector.detect(rgb(load_sample_image(name))) == []


def test_tiny_images_have_no_faces(face_detector: FaceDetector) -> None:
    assert face_detector.detect(np.zeros((16, 400, 3), dtype=np.uint8)) == []


def test_concurrent_detections_give_the_sequential_answers(face_detector: FaceDetector) -> None:
    photo = rgb(skimage.data.astronaut())
    images = [photo, rgb(skimage.data.coffee()), np.ascontiguousarray(photo[:, ::-1])] * 2
    sequential = [face_detector.detect(image) for image in images]

    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent: list[list[Face]] = list(pool.map(face_detector.detect, images))

    assert concurrent == sequential
    assert [len(faces) for faces in sequential] == [1, 0, 1] * 2
